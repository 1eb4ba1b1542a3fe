#!/usr/bin/env python3
"""The peer for `suture bench pause`: the lab recipe's write cycle done the plain way, one round trip
per step (interrupt -> stop reply, read 16 bytes, write one byte back unchanged, read back, continue),
against a running lab. Prints the client's window and QEMU's own STOP -> RESUME window (QMP events).

    python3 Benchmarks/recipe_cycle.py --state $SUTURE_LAB_RUN/state.json --site ffffffff81abee50

Needs the lab's QMP socket free (no other QMP client) and no other gdbstub client.
"""
import argparse, json, select, socket, statistics, time

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--state', required=True, help="the lab's state.json (gdbPort, qmpSocket)")
    ap.add_argument('--site', required=True, help='kernel address (hex) to read and rewrite unchanged')
    ap.add_argument('--cycles', type=int, default=50)
    args = ap.parse_args()
    state = json.load(open(args.state))
    site = int(args.site, 16)

    gdb = socket.create_connection(('127.0.0.1', state['gdbPort']))
    gdb.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    inbox = b''

    def packet():
        nonlocal inbox
        while True:
            start = inbox.find(b'$')
            end = inbox.find(b'#', start) if start >= 0 else -1
            if end >= 0 and len(inbox) >= end + 3:
                payload, inbox = inbox[start + 1:end], inbox[end + 3:]
                gdb.sendall(b'+')
                return payload
            data = gdb.recv(65536)
            if not data:
                raise SystemExit('gdbstub closed the connection')
            inbox += data

    def frame(text):
        body = text.encode()
        return b'$' + body + b'#%02x' % (sum(body) & 0xff)

    def request(text):
        gdb.sendall(frame(text))
        return packet()

    packet()                                   # QEMU's stop reply on connect
    request('qSupported:multiprocess+')

    qmp = socket.socket(socket.AF_UNIX)
    qmp.connect(state['qmpSocket'])
    lines = qmp.makefile('rb')
    lines.readline()
    qmp.sendall(b'{"execute": "qmp_capabilities"}\n')
    lines.readline()
    gdb.sendall(frame('c'))

    def stamp(event):
        return event['timestamp']['seconds'] + event['timestamp']['microseconds'] / 1e6

    def next_event(name):
        while True:
            event = json.loads(lines.readline())
            if event.get('event') == name:
                return event

    next_event('RESUME')                       # the continue after connecting
    time.sleep(0.2)

    client, vm = [], []
    for _ in range(args.cycles):
        started = time.perf_counter()
        gdb.sendall(b'\x03')
        packet()                               # T02
        original = request('m%x,10' % site)
        request('M%x,1:%s' % (site, original[:2].decode()))
        if request('m%x,10' % site) != original:
            raise SystemExit('read back differs')
        gdb.sendall(frame('c'))
        client.append((time.perf_counter() - started) * 1e6)
        stop, resume = next_event('STOP'), next_event('RESUME')
        vm.append((stamp(resume) - stamp(stop)) * 1e6)
        time.sleep(0.02)
    for label, values in (("client's window", client), ("QEMU's STOP -> RESUME", vm)):
        values.sort()
        print(f'{label:22s} min {values[0]:.0f}  median {statistics.median(values):.0f}  max {values[-1]:.0f} µs  (n={len(values)})')
    gdb.sendall(b'\x03')
    packet()
    request('D;1')

if __name__ == '__main__':
    main()
