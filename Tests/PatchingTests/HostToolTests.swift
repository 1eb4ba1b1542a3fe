import Foundation
import Testing
import TestSupport
@testable import Patching

/// The one runner of host tools, as kernel builds and the lab use it: where output goes, and what
/// the errors say.
struct HostToolTests {
    @Test("captured output keeps stdout apart from stderr")
    func capturedOutput() throws {
        let result = try HostTool.run("sh", ["-c", "echo out; echo err >&2; exit 3"], package: "dash",
                                      throwing: KernelBuildError.self)
        #expect(result.status == 3)
        #expect(result.stdout == "out\n")
        #expect(result.stderr == "err\n")
        #expect(result.output == "out\n\nerr\n")
    }

    @Test("a log gets stdout and stderr interleaved and is kept; stdin and stdout can be files")
    func logAndFiles() throws {
        let folder = try Fixtures.temporaryFolder("suture-hosttool")
        defer { try? FileManager.default.removeItem(at: folder) }
        let log = folder.path + "/make.log"
        let result = try HostTool.run("sh", ["-c", "echo one; echo two >&2; echo three"], output: .log(log),
                                      package: "dash", throwing: KernelBuildError.self)
        #expect(result.stdout == "one\ntwo\nthree\n")
        #expect(result.stderr.isEmpty)
        #expect(try String(contentsOfFile: log, encoding: .utf8) == result.stdout)

        let input = folder.path + "/in", copy = folder.path + "/out"
        try Data([0, 1, 2, 0xff]).write(to: URL(fileURLWithPath: input))
        let copied = try HostTool.check("cat", [], input: input, output: .stdoutFile(copy), package: "coreutils",
                                        throwing: KernelBuildError.self)
        #expect(copied.stdout.isEmpty)
        #expect(try Data(contentsOf: URL(fileURLWithPath: copy)) == Data([0, 1, 2, 0xff]))
    }

    @Test("a failed tool is named with its command line, status, output and log")
    func failureMessage() throws {
        let folder = try Fixtures.temporaryFolder("suture-hosttool")
        defer { try? FileManager.default.removeItem(at: folder) }
        let log = folder.path + "/build.log"
        do {
            try HostTool.check("sh", ["-c", "echo broken >&2; exit 2"], output: .log(log), package: "dash",
                               throwing: KernelBuildError.self)
            Issue.record("a failing tool passed the check")
        } catch {
            #expect("\(error)" == "sh -c 'echo broken >&2; exit 2' exited with status 2 (full output in \(log)):\n    broken")
        }
    }

    @Test("a tool killed by a signal reports 128 + the signal, as the shell does")
    func killedBySignal() throws {
        let result = try HostTool.run("sh", ["-c", "kill -9 $$"], package: "dash", throwing: KernelBuildError.self)
        #expect(result.status == 128 + 9)
    }

    @Test("a missing tool names the package to install")
    func missingTool() throws {
        do {
            try HostTool.check("suture-no-such-tool", [], package: "suture-tools", throwing: KernelBuildError.self)
            Issue.record("ran a tool that does not exist")
        } catch {
            guard case .toolMissing(tool: "suture-no-such-tool", package: "suture-tools") = error else { throw error }
            #expect("\(error)".contains("apt-get install -y suture-tools"))
        }
    }

    @Test("an interrupt before the start runs nothing")
    func interruptedBeforeStart() throws {
        let interruption = BuildInterruption()
        interruption.interrupt()
        do {
            try HostTool.check("true", [], package: "coreutils", interruption: interruption, throwing: KernelBuildError.self)
            Issue.record("started a tool after an interrupt")
        } catch {
            guard case .interrupted(command: "true") = error else { throw error }
        }
    }
}
