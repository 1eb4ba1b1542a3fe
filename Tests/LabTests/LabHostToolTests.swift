import Foundation
import Testing
import Patching
@testable import Lab

/// Host tools run for the lab fail with `LabError`s that carry the whole output.
struct LabHostToolTests {
    @Test("a failed lab tool is named with its command line, status and all of its output")
    func failureMessage() throws {
        do {
            try HostTool.check("sh", ["-c", "echo out; echo err >&2; exit 4"], package: "dash", throwing: LabError.self)
            Issue.record("a failing tool passed the check")
        } catch {
            guard case .commandFailed(_, 4, _) = error else { throw error }
            let message = "\(error)"
            #expect(message.hasPrefix("sh -c 'echo out; echo err >&2; exit 4' exited with status 4:\n  out\n"))
            #expect(message.contains("\n  err"))
        }
    }

    @Test("a missing lab tool names the package to install")
    func missingTool() throws {
        do {
            _ = try HostTool.run("suture-no-such-tool", [], package: "suture-tools", throwing: LabError.self)
            Issue.record("ran a tool that does not exist")
        } catch {
            #expect("\(error)" == "suture-no-such-tool not found in PATH: apt-get install suture-tools")
        }
    }
}
