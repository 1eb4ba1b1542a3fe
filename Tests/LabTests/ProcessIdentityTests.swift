import Foundation
import Testing
import TestSupport
@testable import Lab

/// The guard that keeps `suture lab down` from signalling anything but the QEMU it started.
struct ProcessIdentityTests {
    @Test("/proc/PID/stat: comm with spaces and parentheses, state and start time")
    func parsesStat() throws {
        // Fields after comm: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itrealvalue starttime ...
        let line = "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 987654 1000 50 0\n"
        let stat = try #require(ProcessStat.parse(line))
        #expect(stat.command == "qemu (x) y")
        #expect(stat.state == "S")
        #expect(stat.startTime == 987654)
        #expect(ProcessStat.parse("4242 (truncated") == nil)
    }

    @Test("a live process matches its identity; a wrong start time never does")
    func identityOfLiveProcess() throws {
        let sleeper = try startSleep()
        defer { stop(sleeper) }
        let identity = try #require(ProcessIdentity.of(pid: sleeper.processIdentifier))
        #expect(identity.isRunning)
        #expect(identity.command == "sleep")
        let impostor = ProcessIdentity(pid: identity.pid, startTime: identity.startTime + 1)
        #expect(!impostor.isRunning)
        #expect(!impostor.signal(SIGTERM))
        #expect(sleeper.isRunning)
    }

    @Test("down with a stale or foreign state file signals nothing")
    func staleStateIsNotSignalled() throws {
        let sleeper = try startSleep()
        defer { stop(sleeper) }
        let vm = LabVM(paths: try LabHarness.paths())
        defer { try? FileManager.default.removeItem(atPath: vm.paths.runFolder) }
        let live = try #require(ProcessIdentity.of(pid: sleeper.processIdentifier))

        // The pid was reused: same number, different start time.
        try vm.writeState(state(for: ProcessIdentity(pid: live.pid, startTime: live.startTime - 1), vm))
        #expect(try vm.status() == .down(stale: state(for: ProcessIdentity(pid: live.pid, startTime: live.startTime - 1), vm)))
        #expect(try vm.down() == false)
        #expect(sleeper.isRunning)
        #expect(!FileManager.default.fileExists(atPath: vm.paths.stateFile))

        // The very process, but not a QEMU: down refuses to signal it.
        try vm.writeState(state(for: live, vm))
        #expect(try vm.down() == false)
        #expect(sleeper.isRunning)
    }

    /// SIGKILL: the test runner may block SIGTERM, and its children inherit that.
    private func stop(_ process: Process) {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    private func startSleep() throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sleep")
        process.arguments = ["60"]
        try process.run()
        return process
    }

    private func state(for identity: ProcessIdentity, _ vm: LabVM) -> LabState {
        LabState(phase: .up, qemu: identity, gdbPort: 1, serialSocket: vm.paths.serialSocket, serialLog: vm.paths.serialLog,
                 qmpSocket: vm.paths.qmpSocket, bulkFile: vm.paths.bulkFile, kaslr: true, smp: 2, memoryMB: 512,
                 nfs: false, kernel: "k", initramfs: "i", startedAt: Date(timeIntervalSince1970: 1_700_000_000))
    }
}
