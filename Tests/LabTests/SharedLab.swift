import Foundation
import Testing
import TestSupport
@testable import Lab

/// One lab VM shared by every test of a suite: booted before the suite's first test, brought
/// down after its last one on every path (a boot costs 6 to 40 s on this 2-core machine, so the
/// tests that can use the same kernel do). Tests find it in `SharedLab.current`.
struct SharedLab: Sendable {
    let vm: LabVM
    let state: LabState

    @TaskLocal static var current: SharedLab?

    /// The shared lab, or a failure saying the suite trait is missing.
    static func require() throws -> SharedLab {
        guard let current else { throw Fixtures.Failure("no shared lab: the suite needs the .sharedLab(...) trait") }
        return current
    }

    /// Environment for the built `suture` binary: this lab's run folder (never the user's lab) and
    /// the given journal folder.
    func environment(stateDirectory: URL) -> [String: String] {
        ["SUTURE_LAB_RUN": vm.paths.runFolder, "SUTURE_STATE_DIR": stateDirectory.path]
    }
}

/// Boots the suite's lab with `options` around all of its tests; see `SharedLab`.
struct SharedLabTrait: SuiteTrait, TestScoping {
    let options: LabOptions

    func scopeProvider(for test: Test, testCase: Test.Case?) -> SharedLabTrait? {
        test.isSuite ? self : nil
    }

    func provideScope(for test: Test, testCase: Test.Case?,
                      performing function: @Sendable () async throws -> Void) async throws {
        let vm = LabVM(paths: try LabHarness.paths())
        defer { try? FileManager.default.removeItem(atPath: vm.paths.runFolder) }
        var started: LabState?
        defer {
            // Every path out, a failed boot included: no QEMU of this run folder may be left.
            _ = try? vm.down()
            if let pid = started?.qemu.pid { ProcessIdentity(pid: pid, startTime: 0).reapIfChild() }
        }
        let state = try vm.up(options)
        started = state
        try await SharedLab.$current.withValue(SharedLab(vm: vm, state: state)) {
            try await function()
        }
        #expect(try vm.down() == true, "the shared lab was no longer running at the end of the suite")
        LabHarness.expectGone(state.qemu, vm: vm)
    }
}

extension Trait where Self == SharedLabTrait {
    /// Boots one lab VM for the whole suite.
    static func sharedLab(_ options: LabOptions) -> SharedLabTrait { SharedLabTrait(options: options) }
}

/// Helpers for running the CLI against a lab.
enum CLI {
    /// Runs the built `suture` with `arguments` in `environment`; returns its output.
    @discardableResult
    static func run(_ arguments: [String], _ environment: [String: String]) throws -> Fixtures.Output {
        try Fixtures.suture(arguments, environment: environment)
    }

    /// Runs a command in the guest through `suture lab exec`.
    static func guest(_ command: String, _ environment: [String: String]) throws -> Fixtures.Output {
        try Fixtures.suture(["lab", "exec", "--", command], environment: environment)
    }

    /// A one-line description of a result, for failure messages.
    static func describe(_ output: Fixtures.Output) -> String {
        "exit \(output.status)\nstdout:\n\(output.stdout)\nstderr:\n\(output.stderr)"
    }
}
