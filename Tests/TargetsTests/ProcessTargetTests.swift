import Foundation
import Testing
import TestSupport
@testable import Targets

/// ProcessTarget against gcc-built programs (ptrace and /proc/PID/mem for real).
@Suite(.serialized) struct ProcessTargetTests {
    static func tasks(of pid: Int32) throws -> Set<String> {
        Set(try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task"))
    }

    @Test func stopsReadsProgramCountersAndFlipsABranch() throws {
        let executable = try TargetFixtures.loopProgram()
        let program = try LiveProgram(executable, arguments: ["2"])
        defer { program.stop() }
        let target = try ProcessTarget(pid: program.pid)
        defer { target.close() }
        #expect(target.capabilities.contains([.stop, .write, .programCounters, .live]))

        let check = try TargetFixtures.runtimeAddress(of: "check", in: executable, pid: program.pid)
        #expect(check.runtime == program.printed["check"])
        let jump = try TargetFixtures.conditionalJump(in: "check", of: executable)
        let site = check.runtime + jump.offset
        #expect(try target.read(at: check.runtime, count: 27) == TargetFixtures.fileBytes(executable, offset: check.fileOffset, count: 27))
        try program.waitForLine { $0 == "result 1" }

        try target.stop()
        // Every thread is stopped under ptrace and none prints.
        let contexts = try target.programCounters()
        #expect(Set(contexts.map(\.id)) == (try Self.tasks(of: program.pid)))
        #expect(contexts.count == 3)
        for tid in contexts.map(\.id) {
            let stat = try String(contentsOfFile: "/proc/\(program.pid)/task/\(tid)/stat", encoding: .utf8)
            #expect(stat.split(separator: ")").last?.split(separator: " ").first == "t", "thread \(tid) not in tracing stop")
        }
        let executableRanges = try TargetFixtures.executableRanges(pid: program.pid)
        for context in contexts {
            #expect(executableRanges.contains { $0.contains(context.programCounter) })
        }
        let before = program.linesSeen
        usleep(50_000)
        #expect(program.linesSeen == before)

        // The text is read-only; /proc/PID/mem writes it anyway.
        try target.write(at: site, bytes: [jump.opcode ^ 1])
        #expect(try target.read(at: site, count: 1) == [jump.opcode ^ 1])
        try target.resume()
        try program.waitForLine(after: program.linesSeen) { $0 == "result 0" }

        try target.stop()
        try target.write(at: site, bytes: [jump.opcode])
        try target.resume()
        try program.waitForLine(after: program.linesSeen) { $0 == "result 1" }
        #expect(GDBRemoteTargetTests.tracer(of: program.pid) == 0)

        // close() while stopped detaches.
        try target.stop()
        #expect(Self.isOurThread(GDBRemoteTargetTests.tracer(of: program.pid)))
        target.close()
        #expect(GDBRemoteTargetTests.tracer(of: program.pid) == 0)
        try program.waitForLine(after: program.linesSeen) { $0 == "result 1" }
    }

    @Test func identityIsTheExecutableAndItsBuildID() throws {
        let executable = try TargetFixtures.loopProgram()
        let program = try LiveProgram(executable)
        defer { program.stop() }
        let target = try ProcessTarget(pid: program.pid)
        defer { target.close() }
        let identity = try target.identity()
        #expect(identity.kind == .process)
        #expect(identity.path == executable.resolvingSymlinksInPath().path)
        let notes = try Fixtures.check("readelf", ["-n", executable.path])
        let line = try #require(notes.split(separator: "\n").first { $0.contains("Build ID:") })
        #expect(identity.buildID == line.split(separator: " ").last.map(String.init))
    }

    @Test func aSecondTracerGetsAClearError() throws {
        let executable = try TargetFixtures.loopProgram()
        let program = try LiveProgram(executable)
        defer { program.stop() }
        let first = try ProcessTarget(pid: program.pid)
        defer { first.close() }
        let late = try ProcessTarget(pid: program.pid)   // opened before anyone traces
        defer { late.close() }

        try first.stop()
        defer { try? first.resume() }
        // Opening while traced: refused at once, naming the tracer.
        let error = #expect(throws: TargetError.self) { try ProcessTarget(pid: program.pid) }
        guard case let .alreadyTraced(pid, tracer)? = error else {
            Issue.record("expected alreadyTraced, got \(String(describing: error))")
            return
        }
        #expect(pid == program.pid && Self.isOurThread(tracer))   // the first target's tracer thread
        #expect(error?.description.contains("pid:\(program.pid)") == true)
        // Stopping while another tracer holds it: PTRACE_SEIZE answers EPERM, reported as such.
        let stopError = #expect(throws: TargetError.self) { try late.stop() }
        #expect(stopError == .alreadyTraced(pid: program.pid, tracer: tracer))
        // The first tracer is unaffected.
        #expect(try first.programCounters().count == 1)
    }

    /// Is `tid` a thread of this test process (a ProcessTarget's tracer thread)?
    static func isOurThread(_ tid: Int32?) -> Bool {
        guard let tid, tid != 0 else { return false }
        return FileManager.default.fileExists(atPath: "/proc/self/task/\(tid)")
    }

    @Test func permissionErrorNamesPidAndPtraceScope() throws {
        // Not even root may trace a kernel thread (PTRACE_SEIZE answers EPERM, /proc/N/mem ESRCH).
        // The SEIZE → EPERM mapping for ordinary processes is covered with a mocked syscall table.
        let statuses = try FileManager.default.contentsOfDirectory(atPath: "/proc").compactMap(Int32.init).sorted()
        let kernelThread = try #require(statuses.first { pid in
            guard pid > 1, let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return false }
            return status.contains("\nKthread:\t1")
        }, "no kernel thread visible in /proc (a pid namespace?)")
        let error = #expect(throws: TargetError.self) { try ProcessTarget(pid: kernelThread) }
        guard case let .permissionDenied(pid, detail)? = error else {
            Issue.record("expected permissionDenied, got \(String(describing: error))")
            return
        }
        #expect(pid == kernelThread)
        #expect(detail.contains("ptrace_scope") || detail.contains("Yama"))
        #expect(error!.description.hasPrefix("pid:\(kernelThread): "))
    }

    @Test func processExitingMidStop() throws {
        let executable = try TargetFixtures.loopProgram()
        let program = try LiveProgram(executable, arguments: ["1"])
        defer { program.stop() }
        let check = try #require(program.printed["check"])
        var options = ProcessTarget.Options()
        options.watchdogSeconds = nil
        let target = try ProcessTarget(pid: program.pid, options: options)
        defer { target.close() }
        try target.stop()
        kill(program.pid, SIGKILL)
        // Wait until the kernel has torn the process down: the leader a zombie (or reaped) and no
        // thread holding the memory any more (a task's status loses its Vm lines when it lets go).
        let end = Date().addingTimeInterval(5)
        while Date() < end {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(program.pid)/task")) ?? []
            let holding = tasks.contains { tid in
                (try? String(contentsOfFile: "/proc/\(program.pid)/task/\(tid)/status", encoding: .utf8))?.contains("VmRSS:") ?? false
            }
            if program.state == nil || (program.state == "Z" && !holding) { break }
            usleep(1000)
        }

        let readError = #expect(throws: TargetError.self) { try target.read(at: check, count: 4) }
        guard case .processExited(let pid, _)? = readError else {
            Issue.record("expected processExited, got \(String(describing: readError))")
            return
        }
        #expect(pid == program.pid)
        let pcError = #expect(throws: TargetError.self) { try target.programCounters() }
        if case .processExited? = pcError {} else { Issue.record("expected processExited, got \(String(describing: pcError))") }
        try target.resume()   // nothing left to detach: no error
        target.close()
    }

    @Test func processGoneBeforeStop() throws {
        let executable = try TargetFixtures.loopProgram()
        let program = try LiveProgram(executable)
        let target = try ProcessTarget(pid: program.pid)
        defer { target.close() }
        program.stop()   // killed and reaped
        let error = #expect(throws: TargetError.self) { try target.stop() }
        switch error {
        case .processExited?, .noSuchProcess?: break
        default: Issue.record("expected processExited, got \(String(describing: error))")
        }
        #expect(throws: TargetError.noSuchProcess(pid: program.pid)) { try ProcessTarget(pid: program.pid) }
    }

    @Test func threadsAppearingAndVanishingWhileStopping() throws {
        let executable = try Fixtures.compileFixture("targets_churn.c", flags: ["-O1", "-pthread"])
        let program = try LiveProgram(executable)
        defer { program.stop() }
        let target = try ProcessTarget(pid: program.pid)
        defer { target.close() }
        for _ in 0..<30 {
            try target.stop()
            // Stopped threads cannot create or end threads: the stop caught every thread there is.
            let contexts = try target.programCounters()
            #expect(Set(contexts.map(\.id)) == (try Self.tasks(of: program.pid)))
            #expect(contexts.contains { $0.id == String(program.pid) })
            try target.resume()
            usleep(2000)
        }
        #expect(GDBRemoteTargetTests.tracer(of: program.pid) == 0)
        try program.waitForLine(after: program.linesSeen) { $0.hasPrefix("spawned") }
    }

    @Test func watchdogResumesALongStop() throws {
        let executable = try TargetFixtures.loopProgram()
        let program = try LiveProgram(executable)
        defer { program.stop() }
        var options = ProcessTarget.Options()
        options.watchdogSeconds = 0.3
        let target = try ProcessTarget(pid: program.pid, options: options)
        defer { target.close() }
        let check = try #require(program.printed["check"])
        try target.stop()
        let stoppedAt = program.linesSeen
        try program.waitForLine(after: stoppedAt, timeout: 5) { $0.hasPrefix("result") }
        #expect(GDBRemoteTargetTests.tracer(of: program.pid) == 0)
        // The interrupted operation learns about it instead of writing into a running process.
        #expect(throws: TargetError.watchdogResumed(target: "pid:\(program.pid)", seconds: 0.3)) {
            try target.write(at: check, bytes: [0x90])
        }
        try target.resume()   // acknowledges; the target is usable again
        #expect(try target.read(at: check, count: 1).count == 1)
    }
}
