import Foundation
import Testing
import ELF
import TestSupport
@testable import Patching

/// String edits of one object of a multi-object module, judged with the linked module. The objects
/// are gcc's (kernel code model, so strings are reached as `.rodata.str1.1+N` like kbuild's), the
/// "modules" are real relocatable links of them: `ld.lld -r -O2` merges equal strings of the two
/// objects and shares suffixes; GNU `ld -r` (binutils 2.40, as kbuild links) keeps each object's
/// strings apart. readelf on the linked file is the oracle for where each field leads.
@Suite struct LinkedModuleStringsTests {
    static let flags = ["-O2", "-c", "-mcmodel=kernel", "-fno-pic"]

    struct Linked {
        var original: URL
        var patched: URL
        var module: URL
        var diff: ObjectDiff
    }

    /// linked_part_a.c before and after, linked_part_b.c, and `linker -r` of the original a with b.
    static func link(_ linker: [String]) throws -> Linked {
        let folder = try Fixtures.temporaryFolder("linked-strings")
        let a = try Fixtures.compileFixture("linked_part_a.c", flags: flags, in: try Fixtures.temporaryFolder("linked-a"))
        let patched = try Fixtures.compileFixture("linked_part_a.c", flags: flags + ["-DPATCHED"], in: try Fixtures.temporaryFolder("linked-a2"))
        let b = try Fixtures.compileFixture("linked_part_b.c", flags: flags, in: folder)
        let module = folder.appendingPathComponent("demo.ko")
        _ = try Fixtures.check(linker[0], Array(linker.dropFirst()) + ["-r", "-o", module.path, a.path, b.path])
        let diff = try ObjectDiff(original: try ELFFile(path: a.path), patched: try ELFFile(path: patched.path),
                                  options: .init(module: "demo", linkedModule: try ELFFile(path: module.path)))
        return Linked(original: a, patched: patched, module: module, diff: diff)
    }

    /// readelf and nm: where the string field of `function` in the linked module (its one
    /// R_X86_64_32S, the kernel code model's absolute field) leads in .rodata.str1.1 (S + A), its
    /// offset in the function, and the module's bytes there.
    static func oracle(_ module: URL, function: String, count: Int) throws -> (offset: Int64, field: UInt64, bytes: [UInt8]) {
        let symbols = try Fixtures.check("nm", ["-S", module.path])
        let line = try #require(symbols.split(separator: "\n").first { $0.hasSuffix(" \(function)") })
        let fields = line.split(separator: " ")
        let value = try #require(UInt64(fields[0], radix: 16)), size = try #require(UInt64(fields[1], radix: 16))
        let entries = try ReadelfOracle(module.path).relocations[".rela.text"]?
            .filter { $0.offset >= value && $0.offset < value + size && $0.type == "R_X86_64_32S" } ?? []
        let entry = try #require(entries.count == 1 ? entries.first : nil, "\(function): \(entries.count) R_X86_64_32S fields")
        #expect(entry.symbol == ".rodata.str1.1")
        let strings = try ReadelfOracle.hexDump(module.path, section: ".rodata.str1.1")
        return (entry.target, entry.offset - value, Array(strings[Int(entry.target)..<Int(entry.target) + count]))
    }

    func edit(_ diff: ObjectDiff, _ text: String) throws -> ObjectDiff.StringEdit {
        try #require(diff.strings.first { $0.original == Array(text.utf8) }, "no edit of \(text) in \(diff.strings)")
    }

    @Test("lld merged share_a's string with share_b's and tail_a's end with tail_b's: both refused naming the other referrer; greet's unique string is a hunk matching the module's bytes")
    func mergedStringsAreRefused() throws {
        let linked = try Self.link(["ld.lld", "-O2"])
        let diff = linked.diff
        #expect(diff.strings.count == 3)

        // The linker really merged them (readelf): share_a and share_b lead to one place, and
        // tail_b's field lands inside tail_a's string.
        let shareA = try Self.oracle(linked.module, function: "share_a", count: 1)
        let shareB = try Self.oracle(linked.module, function: "share_b", count: 1)
        #expect(shareA.offset == shareB.offset)
        let tailA = try Self.oracle(linked.module, function: "tail_a", count: 1)
        let tailB = try Self.oracle(linked.module, function: "tail_b", count: 1)
        #expect(tailB.offset > tailA.offset && tailB.offset < tailA.offset + Int64("long tail MESSAGE: %d\n".utf8.count))

        let shared = try edit(diff, "shared format: %d\n")
        #expect(shared.hunk == nil)
        let sharedReason = try #require(shared.notApplicable)
        #expect(sharedReason.contains("other code or data refers to these bytes too (share_b+0x"), "\(sharedReason)")
        let tail = try edit(diff, "long tail MESSAGE: %d\n")
        #expect(tail.hunk == nil)
        #expect(tail.notApplicable?.contains("(tail_b+0x") == true, "\(tail.notApplicable ?? "")")

        let greet = try edit(diff, "hello from part a: %d\n")
        #expect(greet.notApplicable == nil)
        let hunk = try #require(greet.hunk)
        let reference = try #require(hunk.reference)
        #expect(reference.symbol == "greet" && reference.module == "demo" && reference.encoding == .abs32s && reference.bias == 0)
        let found = try Self.oracle(linked.module, function: "greet", count: hunk.expected.count)
        #expect(found.bytes == hunk.expected && found.field == reference.field)
        #expect(hunk.replacement == Array("Hello from part a: %d\n\0".utf8))
        #expect(throws: ObjectDiffError.self) { _ = try diff.bundle() }
    }

    @Test("GNU ld -r kept each object's strings apart: all three edits are hunks, each matching the module's bytes at its field")
    func separateStringsAreAccepted() throws {
        let linked = try Self.link(["ld"])
        let diff = linked.diff
        #expect(diff.notApplicable.isEmpty, "\(diff.notApplicable)")
        #expect(diff.hunks.count == 3)
        for hunk in diff.hunks {
            let reference = try #require(hunk.reference)
            let found = try Self.oracle(linked.module, function: reference.symbol, count: hunk.expected.count)
            #expect(found.bytes == hunk.expected && found.field == reference.field, "\(reference.symbol)")
        }
        // readelf: share_b's copy is another place, which the hunk leaves alone.
        let shareA = try Self.oracle(linked.module, function: "share_a", count: 1)
        let shareB = try Self.oracle(linked.module, function: "share_b", count: 1)
        #expect(shareA.offset != shareB.offset)
    }

    @Test("a linked module not built from this object (another text at the field) refuses, saying what it found")
    func otherModuleIsRefused() throws {
        let folder = try Fixtures.temporaryFolder("linked-other")
        let a = try Fixtures.compileFixture("linked_part_a.c", flags: Self.flags, in: try Fixtures.temporaryFolder("linked-o1"))
        let patched = try Fixtures.compileFixture("linked_part_a.c", flags: Self.flags + ["-DPATCHED"], in: folder)
        let module = folder.appendingPathComponent("other.ko")
        _ = try Fixtures.check("ld", ["-r", "-o", module.path, patched.path])
        let diff = try ObjectDiff(original: try ELFFile(path: a.path), patched: try ELFFile(path: patched.path),
                                  options: .init(module: "demo", linkedModule: try ELFFile(path: module.path)))
        let greet = try edit(diff, "hello from part a: %d\n")
        #expect(greet.hunk == nil)
        let reason = try #require(greet.notApplicable)
        #expect(reason.contains("has no function greet") && reason.contains("not built from this source"), "\(reason)")
        #expect(reason.contains("expected 68 65 6c 6c 6f"), "\(reason)")
    }

    @Test("suture diff --linked-module: the merged module refuses naming the other referrer (exit 1, no bundle); the separate one makes the bundle")
    func diffCommand() throws {
        let folder = try Fixtures.temporaryFolder("linked-cli")
        defer { try? FileManager.default.removeItem(at: folder) }
        let merged = try Self.link(["ld.lld", "-O2"])
        let refusedBundle = folder.appendingPathComponent("refused.json").path
        let refused = try Fixtures.suture(["diff", merged.original.path, merged.patched.path, "--module", "demo",
                                           "--linked-module", merged.module.path, "-o", refusedBundle])
        #expect(refused.status == 1, "\(refused.stdout)\n\(refused.stderr)")
        #expect((refused.stdout + refused.stderr).contains("(share_b+0x"), "\(refused.stdout)\n\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: refusedBundle))

        let separate = try Self.link(["ld"])
        let madeBundle = folder.appendingPathComponent("made.json").path
        let made = try Fixtures.suture(["diff", separate.original.path, separate.patched.path, "--module", "demo",
                                        "--linked-module", separate.module.path, "-o", madeBundle])
        #expect(made.status == 0, "\(made.stdout)\n\(made.stderr)")
        #expect(try PatchBundle.load(path: madeBundle).hunks == separate.diff.hunks)
    }
}
