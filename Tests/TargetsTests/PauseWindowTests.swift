import Foundation
import Testing
import TestSupport
@testable import Targets

/// How long a patch keeps the target stopped: stop → read → write → read back → resume, timed
/// from the start of `stop()` to the return of `resume()` (an upper bound of the real pause).
/// Prints the median over 50 cycles; asserts only that each cycle is sane and restores the bytes.
@Suite(.serialized) struct PauseWindowTests {
    static func cycle(_ target: any MemoryTarget, at site: UInt64) throws -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try target.stop()
        let original = try target.read(at: site, count: 16)
        try target.write(at: site, bytes: [original[0]])
        let back = try target.read(at: site, count: 16)
        try target.resume()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        guard back == original else { throw Fixtures.Failure("read back \(back) != \(original)") }
        return elapsed
    }

    /// `count` cycles at `site`, `gap` microseconds apart so that the target runs in between.
    static func cycles(_ target: any MemoryTarget, at site: UInt64, count: Int = 50, gap: UInt32 = 1000) throws -> [Double] {
        try (0..<count).map { _ in
            defer { usleep(gap) }
            return try cycle(target, at: site)
        }
    }

    static func report(_ label: String, _ samples: [Double]) -> Double {
        let sorted = samples.sorted()
        let median = sorted[sorted.count / 2]
        print(String(format: "pause window %@: median %.3f ms, min %.3f ms, max %.3f ms over %d cycles",
                     label, median, sorted.first!, sorted.last!, sorted.count))
        return median
    }

    @Test func processTargetCycle() throws {
        let executable = try TargetFixtures.loopProgram()
        let program = try LiveProgram(executable, arguments: ["2"])
        defer { program.stop() }
        let target = try ProcessTarget(pid: program.pid)
        defer { target.close() }
        let site = try #require(program.printed["check"])
        #expect(Self.report("ProcessTarget (3 threads)", try Self.cycles(target, at: site)) < 100)
        try program.waitForLine(after: program.linesSeen) { $0 == "result 1" }
    }

    @Test func gdbserverCycle() throws {
        let fixture = try GDBServerFixture()
        defer { fixture.stop() }
        let target = try GDBRemoteTarget(host: "127.0.0.1", port: fixture.port)
        defer { target.close() }
        let site = try #require(fixture.program.printed["check"])
        #expect(Self.report("gdbserver", try Self.cycles(target, at: site)) < 100)
        try fixture.program.waitForLine(after: fixture.program.linesSeen) { $0 == "result 1" }
    }
}
