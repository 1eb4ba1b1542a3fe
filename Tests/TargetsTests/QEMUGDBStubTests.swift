import Foundation
import Symbols
import Lab
import Testing
import TestSupport
@testable import Targets

/// GDBRemoteTarget against QEMU's gdbstub running the Debian kernel (TCG, pti=on, nokaslr) with a
/// tiny initramfs whose init keeps both vCPUs spinning in user mode: every stop finds the vCPUs on
/// page tables without the kernel, so kernel reads must fall back (other vCPU, then physical).
@Suite(.serialized, .labVMExclusive) struct QEMUGDBStubTests {
    final class Guest {
        let qemu: Spawned
        let port: UInt16
        let log: URL
        let folder: URL
        init() throws {
            let kernel = try Fixtures.debianKernel()
            folder = try Fixtures.temporaryFolder("suture-qemu")
            let root = folder.appendingPathComponent("root")
            try FileManager.default.createDirectory(at: root.appendingPathComponent("proc"), withIntermediateDirectories: true)
            _ = try Fixtures.compileFixture("targets_spin_init.c", flags: ["-O1", "-static"], in: root)
            try FileManager.default.moveItem(at: root.appendingPathComponent("targets_spin_init"), to: root.appendingPathComponent("init"))
            try FileManager.default.removeItem(at: root.appendingPathComponent("targets_spin_init.c"))
            let cpio = folder.appendingPathComponent("initramfs.cpio")
            try Fixtures.check("sh", ["-c", "cd '\(root.path)' && find . | cpio -o -H newc > '\(cpio.path)' 2>/dev/null"])
            log = folder.appendingPathComponent("serial.log")
            port = try TargetFixtures.freePort()
            qemu = try Spawned("/usr/bin/qemu-system-x86_64", [
                "-accel", "tcg", "-m", "256", "-smp", "2", "-kernel", kernel.vmlinuz.path, "-initrd", cpio.path,
                "-append", "console=ttyS0 nokaslr pti=on panic=-1 loglevel=3",
                "-display", "none", "-monitor", "none", "-no-reboot", "-serial", "file:\(log.path)",
                "-gdb", "tcp:127.0.0.1:\(port)",
                "-qmp", "unix:\(folder.appendingPathComponent("qmp.sock").path),server=on,wait=off",
            ], stderrPath: folder.appendingPathComponent("qemu.err").path)
        }

        var qmpSocket: String { folder.appendingPathComponent("qmp.sock").path }

        var serial: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        func waitFor(_ text: String, after: String.Index? = nil, seconds: Double) throws {
            let end = Date().addingTimeInterval(seconds)
            while Date() < end {
                let s = serial
                if let after, after <= s.endIndex { if s[after...].contains(text) { return } } else if after == nil, s.contains(text) { return }
                guard qemu.isRunning else { throw Fixtures.Failure("QEMU exited; serial: \(s.suffix(500))") }
                usleep(50_000)
            }
            throw Fixtures.Failure("no '\(text)' on the serial console after \(seconds) s: \(serial.suffix(500))")
        }

        /// Waits for init to keep both vCPUs in user mode; then its kallsyms and linux_banner's address.
        func spinning() throws -> (symbols: SymbolIndex, banner: UInt64) {
            try waitFor("SPINNING", seconds: 120)
            let symbols = try self.symbols()
            guard let banner = symbols.symbols(named: "linux_banner").first?.address else {
                throw Fixtures.Failure("no linux_banner in the kallsyms init printed")
            }
            return (symbols, banner)
        }

        /// The kallsyms lines init printed, parsed by the Symbols module.
        func symbols() throws -> SymbolIndex {
            let lines = serial.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("SYM ") }.map { $0.dropFirst(4) + "\n" }.joined()
            return SymbolIndex(try KallsymsParser.parse(Array(lines.utf8), file: "guest kallsyms"))
        }

        func stop() {
            qemu.kill()
            try? FileManager.default.removeItem(at: folder)
        }
    }

    /// Reads while the VM runs go out as interrupt, reads and `c` in one write; the write window's
    /// stop carries the program counters and reads with the interrupt. Here the vCPUs are mostly in
    /// user mode under PTI, so those kernel reads usually fail (E14) and must take the general
    /// route, and the VM must be running again after every call (a late ack would stop it for good).
    @Test func pipelinedStopsAndReadsInPassingUnderPTI() throws {
        let guest = try Guest()
        defer { guest.stop() }
        let (symbols, banner) = try guest.spinning()
        let target = try GDBRemoteTarget(host: "127.0.0.1", port: guest.port, symbols: symbols)
        defer { target.close() }
        let qmp = try VMRunStateLog(socket: guest.qmpSocket)
        try target.stop()
        let reference = try target.read(at: banner, count: 0x1800)
        try target.resume()

        var before = try qmp.pauses().count
        for _ in 0..<5 {
            let parts = try target.read(ranges: [banner..<(banner + 0x40), (banner + 0x40)..<(banner + 0x1800)])
            #expect(Array(parts.joined()) == reference)
            #expect(try qmp.isRunning(), "a read left the VM stopped")
        }
        var after = try qmp.pauses(settle: 0.2).count
        // Each read: one stop in passing, and (E14 here) one more through the general route.
        #expect(after - before <= 10)

        before = after
        let snapshot = try target.stop(reading: [banner..<(banner + 0x10), (banner + 0x100)..<(banner + 0x110)])
        #expect(snapshot.contexts.count == 2)
        // Usually both vCPUs are in init's user-mode loop (then the queued reads fail with E14 and
        // take the general route); now and then one is in the kernel (a timer tick, the TICK
        // printer's write). Either way the bytes must be right.
        #expect(snapshot.contexts.allSatisfy { $0.programCounter != 0 })
        #expect(snapshot.contents == [Array(reference[0..<0x10]), Array(reference[0x100..<0x110])])
        #expect(try !qmp.isRunning())
        let back = try target.write([MemoryBlock(address: banner, bytes: Array("Lunix".utf8)),
                                     MemoryBlock(address: banner + 0x100, bytes: [reference[0x100] ^ 0xff])])
        #expect(back == [Array("Lunix".utf8), [reference[0x100] ^ 0xff]])
        let restored = try target.write([MemoryBlock(address: banner, bytes: Array(reference[0..<0x110]))])
        #expect(restored == [Array(reference[0..<0x110])])
        try target.resume()
        #expect(try qmp.isRunning())
        after = try qmp.pauses(settle: 0.2).count
        #expect(after - before == 1, "the snapshot, the writes and the read-backs share one stop")
        #expect(try target.read(at: banner, count: 0x1800) == reference)

        // Reads that are too large to go in passing still leave the VM running.
        let whole = try target.read(at: banner, count: GDBRemoteTarget.inPassingLimit + 0x800)
        #expect(Array(whole.prefix(0x1800)) == reference)
        #expect(try qmp.isRunning())
    }

    @Test func kernelIdentityReadsWritesAndPauseWindowUnderPTI() throws {
        let guest = try Guest()
        defer { guest.stop() }
        let (symbols, banner) = try guest.spinning()

        let target = try GDBRemoteTarget(host: "127.0.0.1", port: guest.port, symbols: symbols)
        defer { target.close() }
        #expect(target.isQEMU)
        #expect(target.architecture == "i386:x86-64")

        // Identity: the release in the banner and the build-id in the notes, as in the vmlinux file.
        let identity = try target.identity()
        #expect(identity.kind == .kernel)
        #expect(identity.release == "6.1.0-56-amd64")
        let vmlinux = try Fixtures.debianVmlinux()
        let buildID = try FileTargetTests.buildID(vmlinux)
        #expect(buildID != nil && identity.buildID == buildID)
        #expect(identity.banner?.hasPrefix("Linux version 6.1.0-56-amd64 ") == true)

        // Both vCPUs run user code: the stop finds them there, and kernel reads still work.
        try target.stop()
        let contexts = try target.programCounters()
        #expect(contexts.count == 2)
        let bytes = try target.read(at: banner, count: 0x3000)    // several chunks, pipelined
        #expect(Array(bytes.prefix(14)) == Array("Linux version ".utf8))
        // A write to read-only kernel data lands (through whichever path works) and reads back.
        try target.write(at: banner, bytes: Array("Lunix".utf8))
        #expect(try target.read(at: banner, count: 5) == Array("Lunix".utf8))
        try target.write(at: banner, bytes: Array(bytes.prefix(5)))
        #expect(try target.read(at: banner, count: 0x3000) == bytes)
        try target.resume()
        print("QEMU vCPU program counters at the stop: " + contexts.map { "\($0.id)=\(String($0.programCounter, radix: 16))" }.joined(separator: " "))

        let samples = try PauseWindowTests.cycles(target, at: banner, gap: 2000)
        #expect(PauseWindowTests.report("QEMU gdbstub (TCG, PTI, user-mode vCPUs)", samples) < 100)

        // The direct map (page_offset_base + physical address) is outside the kernel image: with
        // every vCPU in user mode only a walk of the kernel's page tables reaches it.
        let physBase = try target.read(at: try #require(symbols.symbols(named: "phys_base").first).address, count: 8)
            .withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        let pageOffset = try target.read(at: try #require(symbols.symbols(named: "page_offset_base").first).address, count: 8)
            .withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        let alias = pageOffset + (banner - KernelSymbols.startKernelMap + physBase)
        try target.stop()
        #expect(try target.read(at: alias, count: 0x2000) == Array(bytes.prefix(0x2000)))
        try target.resume()

        // Detach: the guest keeps running (init keeps printing).
        target.close()
        var mark = guest.serial.endIndex
        try guest.waitFor("TICK", after: mark, seconds: 10)

        // Without phys_base known, the kernel image is reached through the page tables too.
        var noPhysBase = KernelSymbols(index: symbols)
        noPhysBase.physBase = nil
        let second = try GDBRemoteTarget(host: "127.0.0.1", port: guest.port, kernel: noPhysBase)
        defer { second.close() }
        #expect(try second.identity() == identity)
        second.close()
        mark = guest.serial.endIndex
        try guest.waitFor("TICK", after: mark, seconds: 10)
    }
}
