import Foundation
import Glibc
import Testing
import TestSupport
@testable import Targets

/// The guard resumes stopped targets when a real signal arrives. SIGUSR1/SIGUSR2 stand in for
/// SIGINT/SIGTERM, and the guard does not re-raise, so the test process survives.
@Suite(.serialized) struct SignalGuardTests {
    static func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while !condition(), Date() < end { usleep(2000) }
        return condition()
    }

    @Test func signalResumesAStoppedProcess() throws {
        let executable = try TargetFixtures.loopProgram()
        let program = try LiveProgram(executable, arguments: ["1"])
        defer { program.stop() }
        let guardian = try SignalGuard.install(signals: [SIGUSR1], reraise: false)
        defer { guardian.uninstall() }
        var options = ProcessTarget.Options()
        options.watchdogSeconds = nil   // only the guard may resume it here
        let target = try ProcessTarget(pid: program.pid, options: options)
        defer { target.close() }
        guardian.protect(target)

        try target.stop()
        #expect(GDBRemoteTargetTests.tracer(of: program.pid) != 0)
        kill(getpid(), SIGUSR1)
        #expect(Self.waitUntil(5) { guardian.handledSignals == [SIGUSR1] })
        #expect(GDBRemoteTargetTests.tracer(of: program.pid) == 0)
        try program.waitForLine(after: program.linesSeen) { $0 == "result 1" }
        // The target was closed: further use is refused.
        #expect(throws: TargetError.self) { try target.read(at: 0x1000, count: 1) }
    }

    @Test func signalDetachesAStoppedGDBTarget() throws {
        let fixture = try GDBServerFixture()
        defer { fixture.stop() }
        let guardian = try SignalGuard.install(signals: [SIGUSR2], reraise: false)
        defer { guardian.uninstall() }
        var options = GDBRemoteTarget.Options()
        options.watchdogSeconds = nil
        let target = try GDBRemoteTarget(host: "127.0.0.1", port: fixture.port, options: options)
        defer { target.close() }
        guardian.protect(target)

        try target.stop()
        // Lines printed just before the stop may still be in the pipe: let the reader drain them.
        usleep(100_000)
        let stoppedAt = fixture.program.linesSeen
        usleep(50_000)
        #expect(fixture.program.linesSeen == stoppedAt)
        kill(getpid(), SIGUSR2)
        #expect(Self.waitUntil(5) { guardian.handledSignals == [SIGUSR2] })
        #expect(fixture.server.waitForExit(seconds: 10))   // detached: gdbserver's only process is gone
        try fixture.program.waitForLine(after: fixture.program.linesSeen) { $0 == "result 1" }
        #expect(GDBRemoteTargetTests.tracer(of: fixture.program.pid) == 0)
    }

    @Test func oneGuardPerProcessAndUninstallRestores() throws {
        let first = try SignalGuard.install(signals: [SIGUSR1], reraise: false)
        #expect(throws: TargetError.signalGuard(detail: "a guard is already installed (one per process)")) {
            try SignalGuard.install(signals: [SIGUSR2])
        }
        first.uninstall()
        first.uninstall()   // idempotent
        // The previous action (the default: terminate) is back for SIGUSR1; check without raising it.
        var action = sigaction()
        sigaction(SIGUSR1, nil, &action)
        #expect(unsafeBitCast(action.__sigaction_handler.sa_handler, to: Int.self) == 0)   // SIG_DFL
        let second = try SignalGuard.install(signals: [SIGUSR1], reraise: false)
        second.uninstall()
        #expect(throws: TargetError.self) { try SignalGuard.install(signals: [0]) }
    }
}
