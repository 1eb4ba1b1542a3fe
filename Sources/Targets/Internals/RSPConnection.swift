import ELF
import Glibc

/// One TCP connection speaking the GDB Remote Serial Protocol: framing (`$payload#cc`), checksums,
/// `+`/`-` acknowledgements with resending, run-length expansion (`*`), and request pipelining.
///
/// Not thread-safe: `GDBRemoteTarget` serializes every use under its lock. Everything written is
/// queued in `outbox` and flushed before the connection blocks on a read, so the acks for replies
/// travel together with the next requests (one write per round trip).
final class RSPConnection {
    enum Event { case ack, nak, packet }

    let fd: Int32
    let name: String
    let syscalls: Syscalls
    /// Seconds to wait for each expected event before giving up.
    var timeout: Double
    /// True until `QStartNoAckMode` succeeds: then neither side sends `+`/`-` any more.
    private(set) var ackMode = true
    /// The payload of the last packet `nextEvent` returned, run-length expanded (escapes kept).
    private(set) var packet: [UInt8] = []
    /// The last stop reply that arrived while something else was awaited (a stale or unsolicited one).
    private(set) var strayStopReply: [UInt8]?

    /// Packets posted without waiting for their acknowledgement (`c`), oldest first: the next `+`
    /// on the wire is theirs, and a `-` asks for the oldest again.
    private var posted: [[UInt8]] = []
    private var postedResends = 0
    /// Packets received now are not acknowledged (see `exchange(… then:)`).
    private var quiet = false
    /// Nanoseconds to spin on an empty socket before sleeping (see `Syscalls.receive`); set for
    /// the exchanges inside a pause window.
    var spinNanoseconds: UInt64 = 0

    private var inbox: [UInt8] = []
    private var inboxStart = 0
    private var outbox: [UInt8] = []
    private var receiveBuffer = [UInt8](repeating: 0, count: 1 << 16)

    init(host: String, port: UInt16, name: String, syscalls: Syscalls, timeout: Double) throws(TargetError) {
        self.fd = try Self.connect(host: host, port: port, name: name, syscalls: syscalls, timeout: timeout)
        self.name = name
        self.syscalls = syscalls
        self.timeout = timeout
        inbox.reserveCapacity(1 << 17)
        outbox.reserveCapacity(1 << 16)
        packet.reserveCapacity(1 << 13)
    }

    deinit { syscalls.close(fd) }

    // MARK: Connecting

    private static func connect(host: String, port: UInt16, name: String, syscalls: Syscalls,
                                timeout: Double) throws(TargetError) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw .connectionFailed(target: name, detail: "cannot resolve '\(host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        let deadline = Deadline.after(seconds: timeout)
        var failures: [String] = []
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let ai = entry {
            entry = ai.pointee.ai_next
            let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
            let fd = syscalls.table.socket(ai.pointee.ai_family, type, ai.pointee.ai_protocol)
            guard fd >= 0 else {
                failures.append("socket: \(SystemCallError.message(-fd))")
                continue
            }
            var r = syscalls.table.connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen)
            if r == -EINPROGRESS || r == -EINTR {
                // Non-blocking connect: completion shows as writability, the outcome in SO_ERROR.
                do {
                    if try syscalls.wait(fd, for: Int16(POLLOUT), until: deadline) {
                        r = -syscalls.table.socketError(fd)
                    } else {
                        r = -ETIMEDOUT
                    }
                } catch {
                    r = -error.code
                }
            }
            if r == 0 {
                // Small packets must leave at once: the pause window is made of round trips.
                _ = syscalls.table.setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
                return fd
            }
            failures.append(SystemCallError.message(-r))
            syscalls.close(fd)
        }
        throw .connectionFailed(target: name, detail: "\(host):\(port): " + failures.joined(separator: "; "))
    }

    // MARK: Bytes on the wire

    /// Appends a framed packet (`$payload#cc`) to the outbox. Payload bytes that would break framing
    /// (`$`, `#`, `}`, `*`) are escaped.
    static func frame(_ payload: [UInt8], into out: inout [UInt8]) {
        out.append(UInt8(ascii: "$"))
        var sum: UInt8 = 0
        for b in payload {
            if b == 0x24 || b == 0x23 || b == 0x7d || b == 0x2a {
                out.append(0x7d)
                out.append(b ^ 0x20)
                sum = sum &+ 0x7d &+ (b ^ 0x20)
            } else {
                out.append(b)
                sum = sum &+ b
            }
        }
        out.append(UInt8(ascii: "#"))
        HexCodec.append(CollectionOfOne(sum), to: &out)
    }

    /// Queues raw bytes (an interrupt, an ack) for the next flush.
    func queue(raw bytes: [UInt8]) { outbox.append(contentsOf: bytes) }

    /// Writes everything queued.
    func flush(during: String) throws(TargetError) {
        guard !outbox.isEmpty else { return }
        let deadline = Deadline.after(seconds: timeout)
        let outcome: Result<Bool, SystemCallError> = outbox.withUnsafeBytes { raw in
            do throws(SystemCallError) { return .success(try syscalls.sendAll(fd, raw, until: deadline)) }
            catch { return .failure(error) }
        }
        outbox.removeAll(keepingCapacity: true)
        switch outcome {
        case .success(true): return
        case .success(false): throw .timeout(target: name, waitingFor: "room to send (\(during))", seconds: timeout)
        case .failure(let error):
            if error.code == EPIPE || error.code == ECONNRESET { throw .connectionClosed(target: name, during: during) }
            throw .system(name, "send (\(during))", error)
        }
    }

    /// The next ack, nak or packet; flushes the outbox before blocking.
    func nextEvent(waitingFor: String) throws(TargetError) -> Event {
        let deadline = Deadline.after(seconds: timeout)
        while true {
            if let event = try parseEvent() {
                guard !posted.isEmpty, event != .packet else { return event }
                if event == .ack {
                    posted.removeFirst()
                    postedResends = 0
                } else {
                    postedResends += 1
                    guard postedResends <= 8 else {
                        throw .protocolViolation(target: name, context: "'\(preview(posted[0]))'", expected: "'+'", found: "'-' \(postedResends) times")
                    }
                    outbox.append(contentsOf: posted[0])
                }
                continue
            }
            try flush(during: waitingFor)
            let got: Result<Int?, SystemCallError> = receiveBuffer.withUnsafeMutableBytes { raw in
                do throws(SystemCallError) { return .success(try syscalls.receive(fd, into: raw, until: deadline, spinning: spinNanoseconds)) }
                catch { return .failure(error) }
            }
            switch got {
            case .success(nil):
                throw .timeout(target: name, waitingFor: waitingFor, seconds: timeout)
            case .success(0):
                throw .connectionClosed(target: name, during: waitingFor)
            case .success(let n?):
                if inboxStart > 0, inboxStart * 2 >= inbox.count {
                    inbox.removeSubrange(0..<inboxStart)
                    inboxStart = 0
                }
                inbox.append(contentsOf: receiveBuffer[0..<n])
            case .failure(let error):
                if error.code == ECONNRESET { throw .connectionClosed(target: name, during: waitingFor) }
                throw .system(name, "receive (\(waitingFor))", error)
            }
        }
    }

    /// Takes one event off the front of the inbox, or nil when more bytes are needed.
    private func parseEvent() throws(TargetError) -> Event? {
        while inboxStart < inbox.count {
            let c = inbox[inboxStart]
            switch c {
            case UInt8(ascii: "+"):
                inboxStart += 1
                return .ack
            case UInt8(ascii: "-"):
                inboxStart += 1
                return .nak
            case UInt8(ascii: "$"):
                let found: (hash: Int, sum: UInt8)? = inbox.withUnsafeBufferPointer { buffer in
                    let start = inboxStart + 1
                    guard start < buffer.count,
                          let p = memchr(buffer.baseAddress! + start, 0x23, buffer.count - start) else { return nil }
                    let hash = buffer.baseAddress!.distance(to: p.assumingMemoryBound(to: UInt8.self))
                    var sum: UInt8 = 0
                    for i in start..<hash { sum = sum &+ buffer[i] }
                    return (hash, sum)
                }
                guard let found, found.hash + 2 < inbox.count else { return nil }
                let given = HexCodec.number(inbox[found.hash + 1...found.hash + 2])
                let payloadRange = inboxStart + 1..<found.hash
                inboxStart = found.hash + 3
                guard given == UInt64(found.sum) else {
                    if ackMode && !quiet {
                        // Ask for the packet again; the stub resends it.
                        outbox.append(UInt8(ascii: "-"))
                        continue
                    }
                    throw .protocolViolation(target: name, context: "packet checksum", expected: Hex.padded(UInt64(found.sum), width: 2),
                                             found: String(decoding: inbox[found.hash + 1...found.hash + 2], as: UTF8.self))
                }
                expand(payloadRange)
                if ackMode && !quiet { outbox.append(UInt8(ascii: "+")) }
                return .packet
            default:
                // Anything else between packets (a stray byte, a notification start) is skipped.
                inboxStart += 1
            }
        }
        inbox.removeAll(keepingCapacity: true)
        inboxStart = 0
        return nil
    }

    /// Copies a received payload into `packet`, expanding run-length encoding: `X*n` repeats X
    /// (n - 29) more times. Works on a local array and raw buffers: this runs over every byte of
    /// every reply, and per-byte access to a stored property costs an exclusivity check each.
    private func expand(_ range: Range<Int>) {
        var out: [UInt8] = []
        swap(&out, &packet)
        out.removeAll(keepingCapacity: true)
        inbox.withUnsafeBufferPointer { source in
            let base = source.baseAddress!
            var i = range.lowerBound
            while i < range.upperBound {
                // Copy up to the next '*' in one go.
                let star = memchr(base + i, 0x2a, range.upperBound - i).map { base.distance(to: $0.assumingMemoryBound(to: UInt8.self)) }
                let end = star ?? range.upperBound
                out.append(contentsOf: UnsafeBufferPointer(start: base + i, count: end - i))
                guard let star else { break }
                if let last = out.last, star + 1 < range.upperBound {
                    let repeats = Int(base[star + 1]) - 29
                    if repeats > 0 { out.append(contentsOf: repeatElement(last, count: repeats)) }
                    i = star + 2
                } else {
                    out.append(0x2a)
                    i = star + 1
                }
            }
        }
        packet = out
    }

    // MARK: Exchanges

    /// Sends `count` requests, keeping up to `window` in flight, and hands each reply (in `packet`) to
    /// `reply` in request order. `reply` returns false to stop issuing further requests; replies to
    /// those already in flight are still read (and handed over) so the stream stays aligned.
    ///
    /// Acknowledgements follow the stream's order: each `+` or `-` answers the oldest unacknowledged
    /// request (`-` → resend it), and each reply answers the oldest acknowledged one. With one request
    /// in flight this is the ordinary ack/resend protocol.
    ///
    /// `holdAcks` leaves the acknowledgements of the last replies in the outbox, to travel with the
    /// next packet (the `c` that ends a pause window) instead of costing a write of their own.
    ///
    /// `prefix` goes out just before the first request (the interrupt byte), and `then` is a packet
    /// with no reply (`c`) sent right behind the last request, in the same write: QEMU handles the
    /// bytes in order, so `0x03`, reads, `c` stop the VM, answer the reads and resume it with no
    /// round trip of ours in between. `then` needs `window >= count`. The replies of such an
    /// exchange are not acknowledged: the acks would reach QEMU after the `c`, and any byte that
    /// reaches it while the VM runs stops the VM again. QEMU needs none: the next `$` it receives
    /// ends its wait for an ack. (A reply with a bad checksum cannot be asked for again then; it
    /// is a protocol violation.)
    func exchange(count: Int, window: Int, context: String, holdAcks: Bool = false,
                  prefix: [UInt8] = [], then posted: String? = nil,
                  request: (Int, inout [UInt8]) -> Void,
                  reply: (Int) throws(TargetError) -> Bool) throws(TargetError) {
        guard count > 0 else { return }
        precondition(posted == nil || window >= count, "a posted packet must follow the last request")
        outbox.append(contentsOf: prefix)
        quiet = posted != nil
        defer { quiet = false }
        var unacked: [Int] = [], unackedHead = 0       // sent, waiting for '+'
        var awaiting: [Int] = [], awaitingHead = 0     // acknowledged, waiting for the reply
        var frames: [Int: [UInt8]] = [:]               // kept until acknowledged, for resending
        var next = 0, received = 0, resends = 0, issuing = true
        var payload: [UInt8] = []
        payload.reserveCapacity(64)

        func issue() {
            while issuing, next < count, (unacked.count - unackedHead) + (awaiting.count - awaitingHead) < window {
                payload.removeAll(keepingCapacity: true)
                request(next, &payload)
                if ackMode {
                    var framed: [UInt8] = []
                    Self.frame(payload, into: &framed)
                    outbox.append(contentsOf: framed)
                    frames[next] = framed
                    unacked.append(next)
                } else {
                    Self.frame(payload, into: &outbox)
                    awaiting.append(next)
                }
                next += 1
            }
        }

        issue()
        // The posted packet takes index -1: acknowledged like the others, never awaiting a reply.
        let postedIndex = -1
        if let posted {
            var framed: [UInt8] = []
            Self.frame(Array(posted.utf8), into: &framed)
            outbox.append(contentsOf: framed)
            if ackMode {
                frames[postedIndex] = framed
                unacked.append(postedIndex)
            }
        }
        while received < next {
            switch try nextEvent(waitingFor: "the reply to \(context)") {
            case .ack:
                if unackedHead < unacked.count {
                    let i = unacked[unackedHead]
                    unackedHead += 1
                    frames[i] = nil
                    if i != postedIndex { awaiting.append(i) }
                }
            case .nak:
                if unackedHead < unacked.count {
                    let i = unacked[unackedHead]
                    unackedHead += 1
                    resends += 1
                    guard resends <= 8, let framed = frames[i] else {
                        throw .protocolViolation(target: name, context: context, expected: "'+' acknowledging the request",
                                                 found: "'-' \(resends) times")
                    }
                    outbox.append(contentsOf: framed)
                    unacked.append(i)
                }
            case .packet:
                if try isStray() { continue }
                let index: Int
                if awaitingHead < awaiting.count {
                    index = awaiting[awaitingHead]
                    awaitingHead += 1
                } else if unackedHead < unacked.count {
                    // The stub replied without acknowledging first: the reply implies the ack.
                    guard unacked[unackedHead] != postedIndex else {
                        throw .protocolViolation(target: name, context: context, expected: "no reply to '\(posted ?? "")'",
                                                 found: "'\(preview(packet))'")
                    }
                    index = unacked[unackedHead]
                    unackedHead += 1
                    frames[index] = nil
                } else {
                    throw .protocolViolation(target: name, context: context, expected: "no packet",
                                             found: "'\(preview(packet))'")
                }
                received += 1
                if try !reply(index) { issuing = false }
                issue()
            }
            if unackedHead > 64 { unacked.removeFirst(unackedHead); unackedHead = 0 }
            if awaitingHead > 64 { awaiting.removeFirst(awaitingHead); awaitingHead = 0 }
        }
        // Every reply is in, so only the posted packet can still be unacknowledged: its `+` is
        // taken off the stream by the next exchange.
        if let framed = frames[postedIndex], unacked[unackedHead...].contains(postedIndex) { self.posted.append(framed) }
        if !holdAcks { try flush(during: context) }
    }

    /// Sends one request and returns its reply.
    func request(_ text: String, context: String? = nil) throws(TargetError) -> [UInt8] {
        try request(Array(text.utf8), context: context ?? text)
    }

    func request(_ payload: [UInt8], context: String) throws(TargetError) -> [UInt8] {
        var result: [UInt8] = []
        try exchange(count: 1, window: 1, context: context, request: { _, out in out.append(contentsOf: payload) },
                     reply: { _ in result = packet; return true })
        return result
    }

    /// Sends a packet that has no reply until later (`c`): waits only for its acknowledgement.
    func send(_ text: String) throws(TargetError) {
        var framed: [UInt8] = []
        Self.frame(Array(text.utf8), into: &framed)
        outbox.append(contentsOf: framed)
        guard ackMode else { return try flush(during: "'\(text)'") }
        var resends = 0
        while true {
            switch try nextEvent(waitingFor: "the acknowledgement of '\(text)'") {
            case .ack:
                try flush(during: "'\(text)'")
                return
            case .nak:
                resends += 1
                guard resends <= 8 else {
                    throw .protocolViolation(target: name, context: "'\(text)'", expected: "'+'", found: "'-' \(resends) times")
                }
                outbox.append(contentsOf: framed)
            case .packet:
                if try isStray() { continue }
                throw .protocolViolation(target: name, context: "'\(text)'", expected: "'+'", found: "'\(preview(packet))'")
            }
        }
    }

    /// Sends a packet that has no reply until later (`c`) without waiting for its acknowledgement:
    /// the `+` is taken off the stream by whichever exchange comes next. Resuming a stopped target
    /// is the last step of a pause window, and waiting for the `+` would add a round trip to it.
    func post(_ text: String) throws(TargetError) {
        var framed: [UInt8] = []
        Self.frame(Array(text.utf8), into: &framed)
        outbox.append(contentsOf: framed)
        if ackMode { posted.append(framed) }
        try flush(during: "'\(text)'")
    }

    /// Waits for a stop reply (`T`/`S`), skipping console output (`O…`) and stray acks.
    /// A stop reply that arrived earlier while something else was awaited counts.
    func waitForStopReply(context: String) throws(TargetError) -> [UInt8] {
        if let early = strayStopReply {
            strayStopReply = nil
            return early
        }
        while true {
            switch try nextEvent(waitingFor: "a stop reply (\(context))") {
            case .ack, .nak: continue
            case .packet:
                guard let first = packet.first else { continue }
                if first == UInt8(ascii: "T") || first == UInt8(ascii: "S") {
                    try flush(during: context)
                    return packet
                }
                if isConsoleOutput { continue }
                if first == UInt8(ascii: "W") || first == UInt8(ascii: "X") {
                    try flush(during: context)
                    throw .remoteError(target: name, request: context, reply: "\(preview(packet)) (the program exited)")
                }
                throw .protocolViolation(target: name, context: context, expected: "a stop reply (T or S)",
                                         found: "'\(preview(packet))'")
            }
        }
    }

    /// Forgets a remembered stop reply (after `c` made it stale).
    func discardStrayStopReply() { strayStopReply = nil }

    /// `QStartNoAckMode` succeeded: from now on neither side acknowledges.
    func disableAcks() { ackMode = false }

    /// A stop reply, console output or exit report where a normal reply was awaited.
    private func isStray() throws(TargetError) -> Bool {
        guard let first = packet.first, packet.count >= 3 else { return false }
        let isHex = { (c: UInt8) in HexCodec.number(CollectionOfOne(c)) != nil }
        if (first == UInt8(ascii: "T") || first == UInt8(ascii: "S")) && isHex(packet[1]) && isHex(packet[2]) {
            strayStopReply = packet
            return true
        }
        if isConsoleOutput { return true }
        if (first == UInt8(ascii: "W") || first == UInt8(ascii: "X")) && isHex(packet[1]) && isHex(packet[2]) {
            throw .remoteError(target: name, request: "(any)", reply: "\(preview(packet)) (the program exited)")
        }
        return false
    }

    private var isConsoleOutput: Bool {
        packet.count > 1 && packet[0] == UInt8(ascii: "O") && HexCodec.number(CollectionOfOne(packet[1])) != nil
    }

    func preview(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes.prefix(60), as: UTF8.self)
        return bytes.count > 60 ? text + "…" : text
    }
}

