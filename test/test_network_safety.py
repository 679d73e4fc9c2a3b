# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""The suite's ROS traffic cannot leave loopback: checks of the confinement itself."""

import os
from pathlib import Path
import socket
import xml.etree.ElementTree as ET

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / 'config' / 'fastdds_loopback_only.xml'
NS = {'dds': 'http://www.eprosima.com'}


def _profile_tree():
    assert PROFILE.is_file(), f'{PROFILE} is missing: Fast DDS would multicast everywhere'
    assert os.access(PROFILE, os.R_OK), f'{PROFILE} is not readable'
    return ET.parse(PROFILE).getroot()


def test_profile_allows_only_shared_memory_and_loopback_udp():
    """Builtin transports are off; every UDP transport is bound to lo; peers are local."""
    root = _profile_tree()
    participants = root.findall('.//dds:participant', NS)
    assert participants, 'the profile defines no participant'
    default = [p for p in participants if p.get('is_default_profile') == 'true']
    assert len(default) == 1, 'exactly one participant profile must be the default'
    rtps = default[0].find('dds:rtps', NS)
    assert rtps.findtext('dds:useBuiltinTransports', namespaces=NS).strip() == 'false'
    used = {t.text.strip() for t in rtps.findall('dds:userTransports/dds:transport_id', NS)}
    descriptors = {d.findtext('dds:transport_id', namespaces=NS): d
                   for d in root.findall('.//dds:transport_descriptor', NS)}
    assert used and used <= set(descriptors), 'a used transport has no descriptor'
    for name in used:
        kind = descriptors[name].findtext('dds:type', namespaces=NS)
        assert kind in ('SHM', 'UDPv4'), f'transport {name} of type {kind} is not allowed'
        if kind == 'UDPv4':
            allowed = [i.get('name') for i in
                       descriptors[name].findall('dds:interfaces/dds:allowlist/dds:interface',
                                                 NS)]
            assert allowed == ['lo'], f'UDP transport {name} may use {allowed}'
    addresses = [a.text.strip() for a in rtps.findall('.//dds:builtin//dds:address', NS)]
    assert addresses and all(a.startswith('127.') for a in addresses), addresses


def test_environment_loads_the_profile():
    """scripts/env.sh points Fast DDS at the project's profile and selects Fast DDS."""
    if 'SDXL_ROS_CONFINED' not in os.environ:
        pytest.skip('not started by scripts/test.sh, which sets up the confinement')
    assert Path(os.environ['FASTDDS_DEFAULT_PROFILES_FILE']).resolve() == PROFILE.resolve()
    assert os.environ.get('RMW_IMPLEMENTATION') == 'rmw_fastrtps_cpp'
    assert os.environ.get('HF_HUB_OFFLINE') == '1'


def test_network_namespace_has_only_loopback():
    """Under scripts/test.sh the suite sees no interface but lo (when namespaces work)."""
    mode = os.environ.get('SDXL_ROS_CONFINED')
    if mode != 'netns':
        pytest.skip(f'confinement is {mode!r}, not a network namespace')
    names = sorted(name for _, name in socket.if_nameindex())
    assert names == ['lo'], f'interfaces visible to the tests: {names}'
    # Without a route nothing can be sent anywhere but loopback (no packet is tried).
    routes = Path('/proc/net/route').read_text().splitlines()[1:]
    assert all(line.split()[0] == 'lo' for line in routes), routes
