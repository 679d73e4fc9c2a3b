# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
Two "hosts" on one machine: two network namespaces joined by a veth pair, nothing else.

Each host is a network + mount namespace held by a `cat` (started with `unshare -n -m`) that
reads the test's pipe: when the test ends, even killed, the pipe closes, `cat` exits and the
kernel removes the namespaces with the host's end of the veth. The veth is created inside the
first host with its peer put straight into the second, so the test's own namespace is never
touched. Each host sees its own /etc/machine-id (bind-mounted in its private mount namespace):
Fast DDS 3 takes participants with the same machine id for one host and then expects to reach
them through shared memory, so two namespaces sharing the real one never discover each other
over UDP alone - real hosts differ there. Commands run inside with `nsenter`, which execs them
(the process id stays the command's).
"""

import os
from pathlib import Path
import shutil
import subprocess
import time

ROOT = Path(__file__).resolve().parents[1]
PROFILE_TEMPLATE = ROOT / 'config' / 'fastdds_interface_only.xml'
#: The example values of the shipped profile, replaced by `fill_profile`.
TEMPLATE_VALUES = ('sdxl0', '192.0.2.1', '192.0.2.2')
#: Link-local test addresses: they exist only inside the test's two namespaces.
ADDRESSES = ('169.254.73.1', '169.254.73.2')


def setup_problem():
    """Return why two namespaces with a veth cannot be made here, or ''."""
    if os.geteuid() != 0:
        return 'needs root (network namespaces and a veth pair); scripts/test.sh runs as root'
    missing = [tool for tool in ('unshare', 'nsenter', 'ip') if shutil.which(tool) is None]
    if missing:
        return f'needs {", ".join(missing)} (util-linux, iproute2)'
    return ''


def fill_profile(path, interface, own, peer):
    """Write the shipped interface-only profile for one host; return `path`."""
    text = PROFILE_TEMPLATE.read_text()
    for example in TEMPLATE_VALUES:
        assert example in text, f'{PROFILE_TEMPLATE} lost its example value {example}'
    text = text.replace(TEMPLATE_VALUES[0], interface)
    text = text.replace(TEMPLATE_VALUES[1], '@OWN@').replace(TEMPLATE_VALUES[2], '@PEER@')
    Path(path).write_text(text.replace('@OWN@', own).replace('@PEER@', peer))
    return path


class Host:
    """One network namespace, held open by a `cat` process."""

    def __init__(self, name, workdir):
        """Create the namespaces (loopback only, down) and wait until they exist."""
        self.name = name
        machine_id = Path(workdir) / f'machine-id-{name}'
        machine_id.write_text(os.urandom(16).hex() + '\n')
        self._holder = subprocess.Popen(
            ['unshare', '-n', '-m', '--propagation', 'private', 'sh', '-c',
             f'mount --bind {machine_id} /etc/machine-id && exec cat'],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        mine = os.readlink('/proc/self/ns/mnt')
        deadline = time.monotonic() + 10
        while self._namespace_link() in (mine, None) or not self._has_own_machine_id(machine_id):
            if self._holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'unshare -n failed for {name} '
                                   f'(exit {self._holder.poll()})')
            time.sleep(0.02)

    def _namespace_link(self):
        try:
            return os.readlink(f'/proc/{self._holder.pid}/ns/mnt')
        except OSError:
            return None

    def _has_own_machine_id(self, machine_id):
        """Whether the holder sees `machine_id` as /etc/machine-id (its mount is done)."""
        try:
            seen = Path(f'/proc/{self._holder.pid}/root/etc/machine-id').read_text()
        except OSError:
            return False
        return seen == machine_id.read_text()

    @property
    def netns(self):
        """Return the namespace file of this host (for nsenter and `ip ... netns`)."""
        return f'/proc/{self._holder.pid}/ns/net'

    @property
    def prefix(self):
        """Command prefix that runs a program inside this host."""
        return ['nsenter', f'--net={self.netns}', f'--mount=/proc/{self._holder.pid}/ns/mnt',
                '--']

    def run(self, *command, check=True):
        """Run a command inside; return its CompletedProcess (text output)."""
        done = subprocess.run(self.prefix + list(command), capture_output=True, text=True,
                              timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f'{self.name}: {" ".join(command)}: {done.stderr.strip()}')
        return done

    def close(self):
        """End the holder; the kernel removes the namespace and its veth end."""
        if self._holder.poll() is None:
            self._holder.stdin.close()
            try:
                self._holder.wait(5)
            except subprocess.TimeoutExpired:
                self._holder.kill()
                self._holder.wait(5)


class TwoHosts:
    """Hosts a and b joined by a veth pair (a: ADDRESSES[0], b: ADDRESSES[1], /24)."""

    def __init__(self, tag, workdir):
        """Create both hosts and the link; undo everything if a step fails."""
        self.interfaces = (f'sx{tag}a'[:15], f'sx{tag}b'[:15])
        self.hosts = []
        try:
            self.hosts = [Host('a', workdir), Host('b', workdir)]
            a, b = self.hosts
            a.run('ip', 'link', 'add', self.interfaces[0], 'type', 'veth', 'peer', 'name',
                  self.interfaces[1], 'netns', b.netns)
            for host, interface, address in zip(self.hosts, self.interfaces, ADDRESSES):
                host.run('ip', 'addr', 'add', f'{address}/24', 'dev', interface)
                host.run('ip', 'link', 'set', interface, 'up')
            self._wait_up()
        except BaseException:
            self.close()
            raise

    def _wait_up(self, timeout=10.0):
        """Wait until both ends report carrier: Fast DDS skips an interface that is down."""
        deadline = time.monotonic() + timeout
        while True:
            # `ip`, not /sys/class/net: the mount namespace still shows the old net's sysfs.
            states = [host.run('ip', '-o', 'link', 'show', 'dev', interface).stdout
                      .split(' state ')[1].split()[0]
                      for host, interface in zip(self.hosts, self.interfaces)]
            if states == ['UP', 'UP']:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f'the veth ends are {states} after {timeout} s, not up')
            time.sleep(0.05)

    @property
    def a(self):
        """Return the first host (the node's)."""
        return self.hosts[0]

    @property
    def b(self):
        """Return the second host (the client's)."""
        return self.hosts[1]

    def profile(self, index, path):
        """Write the Fast DDS profile of host `index` (0 or 1); return its path."""
        return fill_profile(path, self.interfaces[index], ADDRESSES[index],
                            ADDRESSES[1 - index])

    def shape(self, *qdisc):
        """Put the same root qdisc (tc words) on both ends; raise with tc's reason if refused."""
        for host, interface in zip(self.hosts, self.interfaces):
            host.run('tc', 'qdisc', 'replace', 'dev', interface, 'root', *qdisc)

    def unshape(self):
        """Remove the root qdiscs again."""
        for host, interface in zip(self.hosts, self.interfaces):
            host.run('tc', 'qdisc', 'del', 'dev', interface, 'root', check=False)

    def interfaces_of(self, host):
        """Return the interface names present in a host (lo and its veth end, nothing else)."""
        out = host.run('ip', '-o', 'link', 'show').stdout
        return sorted(line.split(':')[1].strip().split('@')[0] for line in out.splitlines())

    def close(self):
        """Remove both namespaces (and so the veth pair)."""
        for host in self.hosts:
            host.close()
