import Foundation
import Testing
import ELF
import Targets
import TestSupport
@testable import Patching

/// `KernelBuildResult.bundle`: the step of `suture build` after make, which diffs each object of a
/// patch and makes one bundle of them all. Objects compiled here by gcc from the diff fixtures stand
/// for kbuild's (the Debian tree's builds are in KernelBuildTests and the lab tests); ObjectDiff,
/// run on each pair by hand, is the oracle for what each object must contribute.
@Suite struct KernelBuildBundleTests {
    /// Progress events as the bundle step reports them (the progress closure is @Sendable).
    final class Events: @unchecked Sendable {
        private let lock = NSLock()
        private var events: [KernelBuildEvent] = []
        func record(_ event: KernelBuildEvent) { lock.withLock { events.append(event) } }
        var all: [KernelBuildEvent] { lock.withLock { events } }
    }

    /// A result as `buildObjects` returns it, for objects built elsewhere: a minimal tree (the
    /// bundle step reads nothing of it), gcc-12's name, an empty config.
    static func result(_ objects: [BuiltObject]) throws -> KernelBuildResult {
        let root = try Fixtures.temporaryFolder("bundle-tree")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("scripts"), withIntermediateDirectories: true)
        try Data("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\n".utf8).write(to: root.appendingPathComponent("Makefile"))
        try Data().write(to: root.appendingPathComponent("Kbuild"))
        try Data().write(to: root.appendingPathComponent("scripts/config"))
        return KernelBuildResult(tree: try KernelSourceTree(root: root.path), compiler: CompilerCheck(compiler: "gcc-12", versionText: "gcc-12"),
                                 config: KernelConfig(contents: [], path: "test.config"), objects: objects,
                                 restoredFromJournal: [], folder: root.path)
    }

    /// `fixture` built as is and with -DPATCHED (plus `defines`), as the object `object` of `module`.
    static func built(_ fixture: String, as object: String, module: String?, defines: [String] = []) throws -> BuiltObject {
        let flags = ["-O2", "-c"] + defines
        let before = try Fixtures.compileFixture(fixture, flags: flags, in: try Fixtures.temporaryFolder("bundle-before"))
        let after = try Fixtures.compileFixture(fixture, flags: flags + ["-DPATCHED"], in: try Fixtures.temporaryFolder("bundle-after"))
        return BuiltObject(object: KernelObject(source: fixture, object: object, module: module, reason: "test"),
                           before: before.path, after: after.path)
    }

    @Test("two objects, a module's string literal and built-in code: one bundle with each object's hunks, in the patch's order, each with its module")
    func twoObjects() throws {
        // The module's object: greet's "hello world" → "hello_world" (diff_string.c carries a
        // .modinfo, as a one-file module's object does); the built-in one: lock_check's je → jne.
        let string = try Self.built("diff_string.c", as: "drivers/demo/demo.o", module: "demo", defines: ["-DGREET_ONLY"])
        let code = try Self.built("diff_condition.c", as: "kernel/lock.o", module: nil)
        let result = try Self.result([string, code])
        let events = Events()
        let made = try result.bundle(identity: TargetIdentity(kind: .kernel, release: "6.1.0-56-amd64"), description: "two objects",
                                     progress: events.record)

        // What each object's own diff makes, with its module: the bundle is both, string first.
        let own = try [string, code].map { object in
            try ObjectDiff(original: try ELFFile(path: object.before), patched: try ELFFile(path: object.after),
                           options: .init(module: object.object.module))
        }
        let stringHunks = own[0].hunks, codeHunks = own[1].hunks
        try #require(stringHunks.count == 1 && codeHunks.count == 1, "\(stringHunks) \(codeHunks)")
        #expect(made.bundle.hunks == stringHunks + codeHunks)
        #expect(made.diffs.count == 2)
        let text = try #require(stringHunks.first)
        #expect(text.symbol == nil && text.reference?.symbol == "greet" && text.reference?.module == "demo")
        #expect(text.expected == Array("hello world\0".utf8) && text.replacement == Array("hello_world\0".utf8))
        let jump = try #require(codeHunks.first)
        #expect(jump.symbol == "lock_check" && jump.module == nil)
        // Functions to check whole: the code's only (a string hunk has no function of its own).
        #expect(made.bundle.functions?.map(\.symbol) == ["lock_check"])
        #expect(made.bundle.target?.release == "6.1.0-56-amd64")

        // The diff phase names where every hunk is, the string by the reference that finds it.
        let finished = events.all.compactMap { event -> String? in
            if case let .finished(.diff, _, detail) = event { return detail }
            return nil
        }
        #expect(finished == ["2 hunks in lock_check, the string at \(text.location)"], "\(events.all)")
    }

    @Test("an object the patch leaves equal contributes nothing; when no object changes, the bundle is refused naming both")
    func equalObjects() throws {
        let code = try Self.built("diff_condition.c", as: "kernel/lock.o", module: nil)
        let same = BuiltObject(object: KernelObject(source: "diff_condition.c", object: "kernel/same.o", module: nil, reason: "test"),
                               before: code.before, after: code.before)
        let made = try Self.result([same, code]).bundle(identity: nil, description: "one equal", progress: { _ in })
        #expect(made.bundle.hunks.map(\.symbol) == ["lock_check"])

        #expect {
            _ = try Self.result([same, same]).bundle(identity: nil, description: "all equal", progress: { _ in })
        } throws: { error in
            guard case let KernelBuildError.diff(.nothingToPatch(original, _)) = error else { return false }
            return original == code.before + ", " + code.before
        }
    }
}
