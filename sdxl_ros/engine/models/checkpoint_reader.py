# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Read a single-file checkpoint's tensors straight onto the target device (see the class)."""

import json
from pathlib import Path
import struct

from sdxl_ros.engine.errors import ModelLoadError

import torch

# safetensors dtype names (the format's spec) -> torch dtype attribute names.
_SAFETENSORS_DTYPES = {
    'F64': 'float64', 'F32': 'float32', 'F16': 'float16', 'BF16': 'bfloat16',
    'I64': 'int64', 'I32': 'int32', 'I16': 'int16', 'I8': 'int8', 'U8': 'uint8',
    'BOOL': 'bool', 'F8_E4M3': 'float8_e4m3fn', 'F8_E5M2': 'float8_e5m2'}


class CheckpointReader:
    """
    Read a single-file checkpoint's tensors, a key prefix at a time, onto a chosen device.

    Hand-written for safetensors instead of `safetensors.torch.load_file`: that maps the whole
    file and every page it touches stays in the process until the last tensor is dropped, so
    loading onto a GPU held the weights twice (file pages + device copy). On a Jetson, whose
    CPU and GPU share one RAM, that is ~25 GB for SDXL's 12.4 GB of files. Here each tensor is
    read with plain file reads into a small reusable host buffer and copied to the device, so
    the host holds at most one tensor beyond what is being built. Pickle checkpoints (.ckpt)
    are memory-mapped by torch and moved per tensor.
    """

    def __init__(self, path):
        """Parse the header (safetensors) or map the pickle (.ckpt); nothing is read yet."""
        self.path = str(path)
        self._pickle = None
        self._header = None
        if Path(path).suffix.lower() == '.safetensors':
            with open(self.path, 'rb') as stream:
                length = struct.unpack('<Q', stream.read(8))[0]
                header = json.loads(stream.read(length))
            header.pop('__metadata__', None)
            self._data_start = 8 + length
            self._header = header
        else:
            data = torch.load(self.path, map_location='cpu', weights_only=True, mmap=True)
            while isinstance(data, dict) and 'state_dict' in data:
                data = data['state_dict']
            self._pickle = data

    def keys(self):
        """Return the checkpoint's tensor names."""
        return list(self._header if self._header is not None else self._pickle)

    def read(self, prefixes, device):
        """Return {key: tensor} for the keys starting with one of `prefixes`, on `device`."""
        device = torch.device(device)
        keys = [key for key in self.keys() if key.startswith(tuple(prefixes))]
        if self._pickle is not None:
            return {key: self._pickle[key].to(device) for key in keys
                    if isinstance(self._pickle[key], torch.Tensor)}
        entries = sorted(((self._header[key]['data_offsets'], key) for key in keys))
        largest = max((end - begin for (begin, end), _key in entries), default=0)
        staging = torch.empty(largest if device.type != 'cpu' else 0, dtype=torch.uint8)
        out = {}
        with open(self.path, 'rb', buffering=0) as stream:
            for (begin, end), key in entries:
                entry = self._header[key]
                dtype = getattr(torch, _SAFETENSORS_DTYPES[entry['dtype']])
                size = end - begin
                # A CPU target keeps each buffer as its tensor; a device target reuses one.
                buffer = (torch.empty(size, dtype=torch.uint8) if device.type == 'cpu'
                          else staging[:size])
                stream.seek(self._data_start + begin)
                if size and stream.readinto(memoryview(buffer.numpy())) != size:
                    raise ModelLoadError(f'checkpoint {self.path} is truncated at {key}: '
                                         'download it again')
                tensor = buffer.view(dtype).reshape(entry['shape'])
                out[key] = tensor if device.type == 'cpu' else tensor.to(device)
        return out
