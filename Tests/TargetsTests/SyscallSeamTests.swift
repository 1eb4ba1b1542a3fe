import Foundation
import Glibc
import Testing
import TestSupport
@testable import Targets

/// Error paths a real kernel produces only rarely (EINTR, short transfers), injected through the
/// syscall table, plus faults injected into a real gdbserver conversation.
@Suite(.serialized) struct SyscallSeamTests {
    /// A fake file behind a mocked table: pread/pwrite follow a script of outcomes, then serve the rest.
    final class ScriptedFile: @unchecked Sendable {
        enum Step { case fail(Int32), transfer(Int) }
        let lock = NSLock()
        var data: [UInt8]
        var script: [Step]
        var offsets: [Int64] = []

        init(data: [UInt8], script: [Step]) {
            self.data = data
            self.script = script
        }

        /// Returns what the call should do next: an errno, a byte limit, or nil (serve all).
        private func next(_ offset: Int64) -> Step? {
            lock.lock()
            defer { lock.unlock() }
            offsets.append(offset)
            return script.isEmpty ? nil : script.removeFirst()
        }

        /// One pread or pwrite of `count` bytes at `offset`: -errno, or the bytes `copy(start, n)`
        /// moved, at most what the script allows and what the data holds.
        private func transfer(_ count: Int, at offset: Int64, _ copy: (_ start: Int, _ n: Int) -> Void) -> Int {
            var limit = count
            switch next(offset) {
            case .fail(let code)?: return -Int(code)
            case .transfer(let n)?: limit = min(n, count)
            case nil: break
            }
            lock.lock()
            defer { lock.unlock() }
            let start = Int(offset)
            let n = max(0, min(limit, data.count - start))
            copy(start, n)
            return n
        }

        var table: SyscallTable {
            var table = SyscallTable.system
            table.open = { _, _, _ in 42 }
            table.close = { _ in 0 }
            table.pread = { [self] _, buffer, count, offset in
                transfer(count, at: offset) { start, n in
                    if n > 0 { data.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress! + start, byteCount: n) } }
                }
            }
            table.pwrite = { [self] _, buffer, count, offset in
                transfer(count, at: offset) { start, n in
                    data.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: start).copyMemory(from: buffer, byteCount: n) }
                }
            }
            return table
        }
    }

    static let bytes = (0..<200).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }

    @Test func readRetriesEINTRAndContinuesShortReads() throws {
        let file = ScriptedFile(data: Self.bytes, script: [.fail(EINTR), .transfer(7), .fail(EINTR), .transfer(1)])
        let target = try KmemTarget(path: "/mock/kmem", kernel: nil, syscalls: Syscalls(file.table))
        #expect(try target.read(at: 10, count: 50) == Array(Self.bytes[10..<60]))
        #expect(file.offsets == [10, 10, 17, 17, 18])
    }

    @Test func readErrorsNameTheAddress() throws {
        let eio = ScriptedFile(data: Self.bytes, script: [.transfer(4), .fail(EIO)])
        let target = try KmemTarget(path: "/mock/kmem", kernel: nil, syscalls: Syscalls(eio.table))
        let error = #expect(throws: TargetError.self) { try target.read(at: 0x20, count: 16) }
        guard case let .unmappedAddress(name, address, count, detail)? = error else {
            Issue.record("expected unmappedAddress, got \(String(describing: error))")
            return
        }
        #expect(name == "kmem:/mock/kmem" && address == 0x20 && count == 16)
        #expect(detail.contains("pread") && detail.contains("errno 5"))

        // End of file after a partial read: a short transfer, never partial data.
        let eof = ScriptedFile(data: Self.bytes, script: [])
        let short = try KmemTarget(path: "/mock/kmem", kernel: nil, syscalls: Syscalls(eof.table))
        #expect(throws: TargetError.shortTransfer(target: "kmem:/mock/kmem", operation: "read (end of /mock/kmem)",
                                                  address: 190, expected: 20, transferred: 10)) {
            try short.read(at: 190, count: 20)
        }
    }

    @Test func writeRetriesEINTRAndContinuesShortWrites() throws {
        let file = ScriptedFile(data: [UInt8](repeating: 0, count: 64), script: [.fail(EINTR), .transfer(3), .transfer(2)])
        let target = try KmemTarget(path: "/mock/kmem", kernel: nil, syscalls: Syscalls(file.table))
        let payload: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
        try target.write(at: 8, bytes: payload)
        #expect(Array(file.data[8..<17]) == payload)
        #expect(file.offsets == [8, 8, 11, 13])

        // A write that makes no progress is an error, not an endless loop.
        let stuck = ScriptedFile(data: [UInt8](repeating: 0, count: 64), script: [.transfer(2), .transfer(0)])
        let stuckTarget = try KmemTarget(path: "/mock/kmem", kernel: nil, syscalls: Syscalls(stuck.table))
        #expect(throws: TargetError.shortTransfer(target: "kmem:/mock/kmem", operation: "write (no progress)",
                                                  address: 0, expected: 4, transferred: 2)) {
            try stuckTarget.write(at: 0, bytes: [9, 9, 9, 9])
        }
    }

    @Test func waitpidAndOpenRetryEINTR() throws {
        final class Counter: @unchecked Sendable { var calls = 0 }
        let counter = Counter()
        var table = SyscallTable.system
        table.waitpid = { pid, status, _ in
            counter.calls += 1
            if counter.calls < 3 { return -EINTR }
            status.pointee = 0x137f   // stopped by SIGSTOP
            return pid
        }
        table.open = { path, flags, mode in
            counter.calls += 1
            return counter.calls == 4 ? -EINTR : SyscallTable.system.open(path, flags, mode)
        }
        let syscalls = Syscalls(table)
        let result = try syscalls.waitpid(1234, options: 0)
        #expect(result.pid == 1234 && result.status == 0x137f && counter.calls == 3)
        let fd = try syscalls.open("/dev/null", flags: O_RDONLY)
        syscalls.close(fd)
        #expect(counter.calls == 5)
    }

    @Test func seizeRefusedMidWayDetachesWhatWasAttached() throws {
        let executable = try TargetFixtures.loopProgram()
        let program = try LiveProgram(executable, arguments: ["2"])
        defer { program.stop() }
        final class Seizes: @unchecked Sendable { var count = 0 }
        let seizes = Seizes()
        var table = SyscallTable.system
        table.ptrace = { request, pid, address, data in
            if request == PtraceRequest.seize {
                seizes.count += 1
                // The first thread is attached for real; the second is refused as Yama would.
                if seizes.count == 2 { return -Int(EPERM) }
            }
            return SyscallTable.system.ptrace(request, pid, address, data)
        }
        let target = try ProcessTarget(pid: program.pid, options: .init(), syscalls: Syscalls(table))
        defer { target.close() }
        let error = #expect(throws: TargetError.self) { try target.stop() }
        guard case let .permissionDenied(pid, detail)? = error else {
            Issue.record("expected permissionDenied, got \(String(describing: error))")
            return
        }
        #expect(pid == program.pid)
        #expect(detail.contains("PTRACE_SEIZE") && (detail.contains("ptrace_scope") || detail.contains("Yama")))
        // The thread that was attached was released again and the program runs on.
        #expect(GDBRemoteTargetTests.tracer(of: program.pid) == 0)
        #expect(seizes.count == 2)
        try program.waitForLine(after: program.linesSeen) { $0 == "result 1" }
    }

    /// Faults injected between Suture and a real gdbserver: tiny and interrupted socket reads and
    /// writes, a corrupted outgoing checksum (gdbserver answers '-', we resend) and a corrupted
    /// incoming packet (we answer '-', gdbserver resends).
    @Test func gdbConversationSurvivesInjectedFaults() throws {
        let fixture = try GDBServerFixture()
        defer { fixture.stop() }

        final class Faults: @unchecked Sendable {
            let lock = NSLock()
            var reads = 0, writes = 0
            var corruptedOut = false, corruptedIn = false
            var resentQSupported = 0, naksSent = 0
        }
        let faults = Faults()
        var table = SyscallTable.system
        table.read = { fd, buffer, count in
            faults.lock.lock()
            faults.reads += 1
            let n = faults.reads
            faults.lock.unlock()
            if n % 3 == 0 { return -Int(EINTR) }
            let got = SyscallTable.system.read(fd, buffer, min(count, 7))
            faults.lock.lock()
            defer { faults.lock.unlock() }
            if got > 1, !faults.corruptedIn {
                let bytes = buffer.assumingMemoryBound(to: UInt8.self)
                if let i = (0..<got - 1).first(where: { bytes[$0] == UInt8(ascii: "$") }),
                   bytes[i + 1] != UInt8(ascii: "#") {
                    bytes[i + 1] ^= 0x01
                    faults.corruptedIn = true
                }
            }
            return got
        }
        table.write = { fd, buffer, count in
            faults.lock.lock()
            faults.writes += 1
            let text = String(decoding: UnsafeRawBufferPointer(start: buffer, count: count), as: UTF8.self)
            if text.contains("qSupported") { faults.resentQSupported += 1 }
            if text.hasPrefix("-") { faults.naksSent += 1 }
            var copy = [UInt8](UnsafeRawBufferPointer(start: buffer, count: count))
            if !faults.corruptedOut, text.contains("qSupported"), let hash = copy.lastIndex(of: UInt8(ascii: "#")), hash + 2 < copy.count {
                copy[hash + 2] = copy[hash + 2] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
                faults.corruptedOut = true
            }
            let writes = faults.writes
            faults.lock.unlock()
            if writes % 4 == 0 { return -Int(EAGAIN) }
            return copy.withUnsafeBytes { SyscallTable.system.write(fd, $0.baseAddress!, count) }
        }
        let target = try GDBRemoteTarget(host: "127.0.0.1", port: fixture.port, kernel: nil, options: .init(), syscalls: Syscalls(table))
        defer { target.close() }
        let check = try TargetFixtures.runtimeAddress(of: "check", in: fixture.executable, pid: fixture.program.pid)
        #expect(try target.read(at: check.runtime, count: 27) == TargetFixtures.fileBytes(fixture.executable, offset: check.fileOffset, count: 27))
        #expect(faults.corruptedOut && faults.resentQSupported >= 2)   // gdbserver's '-' made us resend
        #expect(faults.corruptedIn && faults.naksSent >= 1)            // our '-' made gdbserver resend
        target.close()
        #expect(fixture.server.waitForExit(seconds: 10))
        #expect(GDBRemoteTargetTests.tracer(of: fixture.program.pid) == 0)
    }
}
