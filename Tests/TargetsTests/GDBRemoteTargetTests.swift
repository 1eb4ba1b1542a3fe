import Foundation
import Testing
import TestSupport
@testable import Targets

/// GDBRemoteTarget against Debian's gdbserver attached to a gcc-built process.
@Suite(.serialized) struct GDBRemoteTargetTests {
    /// TracerPid from /proc/PID/status (0 when nobody traces it).
    static func tracer(of pid: Int32) -> Int32? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("TracerPid:") }) else { return nil }
        return Int32(line.dropFirst("TracerPid:".count).trimmingCharacters(in: .whitespaces))
    }

    @Test func readsCodeWritesABranchAndDetaches() throws {
        let fixture = try GDBServerFixture()
        defer { fixture.stop() }

        let target = try GDBRemoteTarget(host: "127.0.0.1", port: fixture.port)
        defer { target.close() }
        #expect(target.architecture == "i386:x86-64")
        #expect(!target.isQEMU)

        // Code bytes equal the fixture.executable's bytes at the same place (objdump/readelf/maps as oracles).
        let check = try TargetFixtures.runtimeAddress(of: "check", in: fixture.executable, pid: fixture.program.pid)
        let expected = try TargetFixtures.fileBytes(fixture.executable, offset: check.fileOffset, count: 27)
        #expect(try target.read(at: check.runtime, count: 27) == expected)

        // Several chunks: the first three pages of the image are the file's first three pages.
        let loads = try TargetFixtures.programHeaders(fixture.executable)
        try #require(loads.count >= 3 && loads.prefix(3).allSatisfy { $0.offset == $0.vaddr })
        let imageStart = check.runtime - (check.fileOffset - loads[0].offset)
        #expect(try target.read(at: imageStart, count: 0x3000) == TargetFixtures.fileBytes(fixture.executable, offset: 0, count: 0x3000))

        // Flip the branch: the printed result changes; restore: it changes back.
        let jump = try TargetFixtures.conditionalJump(in: "check", of: fixture.executable)
        let site = check.runtime + jump.offset
        try fixture.program.waitForLine { $0 == "result 1" }
        try target.stop()
        try target.write(at: site, bytes: [jump.opcode ^ 1])
        #expect(try target.read(at: site, count: 1) == [jump.opcode ^ 1])
        try target.resume()
        try fixture.program.waitForLine(after: fixture.program.linesSeen) { $0 == "result 0" }
        try target.write(at: site, bytes: [jump.opcode])   // while running: a stop just for the write
        #expect(try target.read(at: site, count: 1) == [jump.opcode])
        try fixture.program.waitForLine(after: fixture.program.linesSeen) { $0 == "result 1" }

        // Detaching leaves the process running and untraced; gdbserver exits.
        target.close()
        #expect(fixture.server.waitForExit(seconds: 10))
        try fixture.program.waitForLine(after: fixture.program.linesSeen) { $0 == "result 1" }
        #expect(Self.tracer(of: fixture.program.pid) == 0)
        #expect(fixture.program.state != nil && fixture.program.state != "t" && fixture.program.state != "T")
    }

    @Test func listsThreadsAndProgramCounters() throws {
        let fixture = try GDBServerFixture(arguments: ["3"])
        defer { fixture.stop() }
        let target = try GDBRemoteTarget(host: "127.0.0.1", port: fixture.port)
        defer { target.close() }

        try target.stop()
        let contexts = try target.programCounters()
        try target.resume()

        // Thread ids are pPID.TID (multiprocess): the same set as /proc/PID/task.
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(fixture.program.pid)/task").compactMap { Int32($0) }
        let ids = contexts.compactMap { context -> Int32? in
            guard let tid = context.id.split(separator: ".").last else { return nil }
            return Int32(tid, radix: 16)
        }
        #expect(Set(ids) == Set(tasks))
        #expect(contexts.count == 4)
        // Every fixture.program counter lies in an fixture.executable mapping of the process.
        let executableRanges = try TargetFixtures.executableRanges(pid: fixture.program.pid)
        for context in contexts {
            #expect(executableRanges.contains { $0.contains(context.programCounter) }, "pc \(String(context.programCounter, radix: 16)) of \(context.id)")
        }
    }

    @Test func readsLargeRangesPipelined() throws {
        let fixture = try GDBServerFixture()
        defer { fixture.stop() }
        let target = try GDBRemoteTarget(host: "127.0.0.1", port: fixture.port)
        defer { target.close() }

        // libc's fixture.executable mapping: its bytes are the file's bytes at the mapping's offset.
        let maps = try String(contentsOfFile: "/proc/\(fixture.program.pid)/maps", encoding: .utf8)
        let line = try #require(maps.split(separator: "\n").first { $0.contains("r-xp") && $0.contains("libc.so") })
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        let range = f[0].split(separator: "-").compactMap { UInt64($0, radix: 16) }
        let offset = try #require(UInt64(f[2], radix: 16))
        let count = min(Int(range[1] - range[0]), 1 << 20)
        let library = URL(fileURLWithPath: String(f[5]))
        try target.stop()
        let start = Date()
        let live = try target.read(at: range[0], count: count)
        let elapsed = Date().timeIntervalSince(start)
        try target.resume()
        #expect(live == (try TargetFixtures.fileBytes(library, offset: offset, count: count)))
        print("gdbserver: read \(count) bytes in \(String(format: "%.3f", elapsed)) s")
    }

    @Test func processIdentityThroughExecFile() throws {
        let fixture = try GDBServerFixture()
        defer { fixture.stop() }
        let target = try GDBRemoteTarget(host: "127.0.0.1", port: fixture.port)
        defer { target.close() }
        #expect(target.features["qXfer:exec-file:read"] == "+")
        let identity = try target.identity()
        #expect(identity.kind == .process)
        #expect(identity.path == fixture.executable.resolvingSymlinksInPath().path)
        let buildID = try FileTargetTests.buildID(fixture.executable)
        #expect(buildID != nil && identity.buildID == buildID)
    }

    @Test func watchdogResumesALongStop() throws {
        let fixture = try GDBServerFixture()
        defer { fixture.stop() }
        var options = GDBRemoteTarget.Options()
        options.watchdogSeconds = 0.3
        let target = try GDBRemoteTarget(host: "127.0.0.1", port: fixture.port, options: options)
        defer { target.close() }
        let check = try #require(fixture.program.printed["check"])
        try target.stop()
        usleep(100_000)   // lines printed just before the stop may still be in the pipe
        let stoppedAt = fixture.program.linesSeen
        usleep(100_000)
        #expect(fixture.program.linesSeen == stoppedAt)   // really stopped
        try fixture.program.waitForLine(after: stoppedAt, timeout: 5) { $0.hasPrefix("result") }   // then resumed
        // The operation that held the stop learns about it instead of writing into a running target.
        #expect(throws: TargetError.watchdogResumed(target: target.name, seconds: 0.3)) {
            try target.write(at: check, bytes: [0x90])
        }
        try target.resume()   // acknowledges
        #expect(try target.read(at: check, count: 4).count == 4)
        try fixture.program.waitForLine(after: fixture.program.linesSeen) { $0 == "result 1" }
    }
}
