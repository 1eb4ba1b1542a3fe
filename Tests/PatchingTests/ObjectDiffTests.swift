import Foundation
import Testing
import ELF
import TestSupport
@testable import Patching

@Suite struct ObjectDiffTests {
    /// A fixture built as is and with -DPATCHED (plus `flags`), and their diff.
    struct Built {
        var original: URL
        var patched: URL
        var diff: ObjectDiff
    }

    func build(_ fixture: String, flags: [String] = ["-O2", "-c"], options: ObjectDiff.Options = .init()) throws -> Built {
        let a = try Fixtures.compileFixture(fixture, flags: flags, in: try Fixtures.temporaryFolder("diff-a"))
        let b = try Fixtures.compileFixture(fixture, flags: flags + ["-DPATCHED"], in: try Fixtures.temporaryFolder("diff-b"))
        let diff = try ObjectDiff(original: try ELFFile(path: a.path), patched: try ELFFile(path: b.path), options: options)
        return Built(original: a, patched: b, diff: diff)
    }

    /// objdump's instructions of one function: offset from the function's start → bytes, mnemonic.
    func objdump(_ file: URL, function: String) throws -> [(offset: UInt64, bytes: [UInt8], text: String)] {
        let raw = try Fixtures.check("objdump", ["-d", "--insn-width=16", file.path])
        var result: [(UInt64, [UInt8], String)] = []
        var start: UInt64?
        for line in raw.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasSuffix(">:") {
                // 0000000000000000 <lock_check>:
                let parts = line.split(separator: " ")
                start = parts.count == 2 && parts[1] == "<\(function)>:" ? UInt64(parts[0], radix: 16) : nil
                continue
            }
            guard let base = start else { continue }
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count >= 3, let address = UInt64(fields[0].trimmingCharacters(in: .whitespaces).dropLast(), radix: 16) else { continue }
            let bytes = fields[1].split(separator: " ").compactMap { UInt8($0, radix: 16) }
            result.append((address - base, bytes, String(fields[2])))
        }
        return result
    }

    /// The instruction of `listing` that starts at `offset`.
    func instruction(at offset: UInt64, in listing: [(offset: UInt64, bytes: [UInt8], text: String)]) throws -> (bytes: [UInt8], text: String) {
        let found = try #require(listing.first { $0.offset == offset }, "objdump has no instruction at +\(Hex.address(offset))")
        return (found.bytes, found.text)
    }

    // MARK: Code changes in small objects

    @Test func flippedConditionIsOneWholeInstructionHunk() throws {
        let built = try build("diff_condition.c")
        let diff = built.diff
        #expect(diff.functions.map(\.original.name) == ["lock_check"])
        #expect(diff.unchangedFunctions == 1)
        let hunk = try #require(diff.hunks.first)
        #expect(diff.hunks.count == 1)
        #expect(hunk.symbol == "lock_check" && hunk.module == nil && hunk.mask == nil)
        // objdump: the hunk is exactly the instruction at its offset, a Jcc that changes condition.
        let before = try instruction(at: hunk.offset, in: objdump(built.original, function: "lock_check"))
        let after = try instruction(at: hunk.offset, in: objdump(built.patched, function: "lock_check"))
        #expect(hunk.expected == before.bytes && hunk.replacement == after.bytes)
        #expect(before.text.hasPrefix("j") && after.text.hasPrefix("j") && before.text != after.text)

        let bundle = try diff.bundle()
        #expect(bundle.hunks == [hunk])
        #expect(bundle.architecture == "x86_64")
        // The run-pre image is the whole original function, relocated bytes masked (readelf's).
        let image = try #require(bundle.functions?.first)
        let listing = try objdump(built.original, function: "lock_check")
        #expect(image.bytes == Array(listing.flatMap(\.bytes).prefix(image.bytes.count)))    // objdump adds the padding
        let oracle = try ReadelfOracle(built.original.path)
        let masked = Set((oracle.relocations[".rela.text"] ?? []).flatMap { $0.offset..<$0.offset + UInt64(ReadelfOracle.fieldSize($0.type)) })
        let function = try #require(try ELFFile(path: built.original.path).symbols().first { $0.name == "lock_check" })
        for (k, m) in image.mask.enumerated() {
            #expect((m == 0) == masked.contains(function.value + UInt64(k)), "mask at +\(k)")
        }
        #expect(!masked.isEmpty && image.mask.contains(0))
    }

    @Test func changedConstantReplacesTheWholeInstruction() throws {
        let built = try build("diff_constant.c")
        let hunks = built.diff.hunks
        #expect(hunks.count == 1)
        let hunk = try #require(hunks.first)
        #expect(hunk.symbol == "scale")
        let before = try instruction(at: hunk.offset, in: objdump(built.original, function: "scale"))
        let after = try instruction(at: hunk.offset, in: objdump(built.patched, function: "scale"))
        #expect(hunk.expected == before.bytes && hunk.replacement == after.bytes)
        #expect(before.text.contains("0x3e8") && after.text.contains("0x7d0"))
        #expect(built.diff.functions.count == 1 && built.diff.notApplicable.isEmpty)
    }

    @Test func moduleOptionNamesTheHunksModule() throws {
        let built = try build("diff_condition.c", options: .init(module: "nfs"))
        #expect(built.diff.hunks.map(\.module) == ["nfs"])
        #expect(built.diff.hunks.first?.location.hasPrefix("lock_check [nfs]+0x") == true)
    }

    @Test func functionsThatOnlyMoveAreEqual() throws {
        let built = try build("diff_moved.c")
        // nm: the functions really are elsewhere in the patched object.
        func addresses(_ url: URL) throws -> [String: String] {
            var result: [String: String] = [:]
            for line in try Fixtures.check("nm", [url.path]).split(separator: "\n") {
                let parts = line.split(separator: " ")
                if parts.count == 3 { result[String(parts[2])] = String(parts[0]) }
            }
            return result
        }
        let a = try addresses(built.original), b = try addresses(built.patched)
        for name in ["first", "second"] { #expect(a[name] != nil && a[name] != b[name], "\(name) did not move") }
        #expect(built.diff.isEmpty, "\(built.diff.render())")
        #expect(built.diff.unchangedFunctions == 3)
        #expect(throws: ObjectDiffError.self) { _ = try built.diff.bundle() }
    }

    @Test func addedFunctionIsRefused() throws {
        let built = try build("diff_added.c")
        #expect(built.diff.added.map(\.name) == ["added_function"])
        #expect(built.diff.functions.isEmpty && built.diff.unchangedFunctions == 1)
        #expect(throws: ObjectDiffError.self) { _ = try built.diff.bundle() }
        do {
            _ = try built.diff.bundle()
        } catch {
            #expect("\(error)".contains("added_function: function added"))
        }
    }

    @Test func dataChangeIsReportedNotPatched() throws {
        let built = try build("diff_data.c")
        let change = try #require(built.diff.objects.first)
        #expect(change.original.name == "table" && built.diff.objects.count == 1)
        // int table[4]: the fourth element (+0xc) went from 4 to 5.
        #expect(change.differences.map(\.range) == [12..<13])
        #expect(built.diff.functions.isEmpty)
        #expect(built.diff.notApplicable == ["table: +0xc (1 bytes): data changed: in-place patches change code and string literals only (the live value may no longer be the file's)"])
    }

    // MARK: Strings

    @Test func sameLengthStringBecomesAReferenceHunk() throws {
        let built = try build("diff_string.c")
        let diff = built.diff
        #expect(diff.module == "demo")
        #expect(diff.strings.count == 3)
        let greet = try #require(diff.strings.first { $0.original == Array("hello world".utf8) })
        #expect(greet.patched == Array("hello_world".utf8))
        let hunk = try #require(greet.hunk)
        #expect(hunk.symbol == nil)
        #expect(hunk.expected == Array("hello world".utf8) + [0] && hunk.replacement == Array("hello_world".utf8) + [0])
        let reference = try #require(hunk.reference)
        #expect(reference.symbol == "greet" && reference.module == "demo" && reference.encoding == .pc32)
        // readelf: greet's relocation into the string section is the field the hunk follows, and
        // its addend plus the bias lands on the string.
        let oracle = try ReadelfOracle(built.original.path)
        let file = try ELFFile(path: built.original.path)
        let function = try #require(try file.symbols().first { $0.name == "greet" })
        let entry = try #require(oracle.relocations[".rela.text"]?.first { $0.offset >= function.value && $0.offset < function.value + function.size
                                                                           && $0.type == "R_X86_64_PC32" })
        #expect(reference.field == entry.offset - function.value)
        let strings = try ReadelfOracle.hexDump(built.original.path, section: ".rodata.str1.1")
        let at = Int(entry.target + reference.bias)
        #expect(Array(strings[at..<at + 12]) == hunk.expected)
        // The call instruction's end is the bias' reference point (objdump: lea ends 4 bytes after the field).
        let lea = try instruction(at: reference.field - 3, in: objdump(built.original, function: "greet"))
        #expect(lea.text.hasPrefix("lea") && Int64(lea.bytes.count) == 3 + reference.bias)

        // The longer string and the shared one are refused, each with its reason.
        let reasons = diff.notApplicable
        #expect(reasons.count == 2)
        #expect(reasons.contains { $0.hasPrefix("string \"short\": length changed from 5 to 17 bytes") })
        #expect(reasons.contains { $0.hasPrefix("string \"shared text.\": other code or data refers to these bytes too (share_two+0x3)") })
        #expect(throws: ObjectDiffError.self) { _ = try diff.bundle() }
        // The hunk survives the bundle format.
        let bundle = PatchBundle(target: nil, architecture: "x86_64", hunks: [hunk])
        let decoded = try PatchBundle.decode(bundle.encoded(), path: "string.json")
        #expect(decoded.hunks == [hunk])
        #expect(hunk.location == "*(greet [demo]+\(Hex.address(reference.field)))")
    }

    @Test func stringsOfAPlainObjectAreNotPatched() throws {
        let built = try build("diff_string.c", flags: ["-O2", "-c", "-DPLAIN_OBJECT"])
        let greet = try #require(built.diff.strings.first { $0.original == Array("hello world".utf8) })
        #expect(greet.hunk == nil)
        #expect(greet.notApplicable?.contains("merged with equal strings of other objects") == true)
    }

    // MARK: Linked files

    @Test func sharedLibrariesDiffLikeTheirObjects() throws {
        let built = try build("diff_condition.c", flags: ["-O2", "-shared", "-fPIC"])
        let hunk = try #require(built.diff.hunks.first)
        #expect(built.diff.hunks.count == 1 && hunk.symbol == "lock_check")
        let before = try instruction(at: hunk.offset, in: objdump(built.original, function: "lock_check"))
        let after = try instruction(at: hunk.offset, in: objdump(built.patched, function: "lock_check"))
        #expect(hunk.expected == before.bytes && hunk.replacement == after.bytes)
        #expect(built.diff.target?.kind == .process && built.diff.target?.buildID?.count == 40)
    }

    @Test func changedStringOfALibraryIsFoundInItsReadOnlyData() throws {
        // Linked code keeps no relocations to its strings: the read-only data is compared directly.
        let built = try build("diff_string.c", flags: ["-O2", "-shared", "-fPIC", "-DPLAIN_OBJECT", "-DGREET_ONLY"])
        #expect(built.diff.functions.isEmpty && built.diff.objects.isEmpty)
        let edit = try #require(built.diff.strings.first)
        #expect(built.diff.strings.count == 1)
        #expect(edit.original == Array("hello world".utf8) && edit.patched == Array("hello_world".utf8))
        // readelf: the string is where the edit says, in the original.
        let rodata = try ReadelfOracle.hexDump(built.original.path, section: edit.section)
        #expect(Array(rodata[Int(edit.offset)..<Int(edit.offset) + 11]) == edit.original)
        // A linked image keeps its layout: the hunk writes the patched build's bytes there, named
        // from a symbol of the image (nm's address of it plus the offset is the string's address).
        let hunk = try #require(edit.hunk)
        #expect(edit.notApplicable == nil)
        #expect(hunk.expected == edit.original + [0] && hunk.replacement == edit.patched + [0])
        let nm = try Fixtures.check("nm", [built.original.path])
        let anchor = try #require(nm.split(separator: "\n").first { $0.hasSuffix(" " + (hunk.symbol ?? "?")) })
        let section = try #require(try ELFFile(path: built.original.path).section(named: edit.section))
        #expect(UInt64(anchor.split(separator: " ")[0], radix: 16)! + hunk.offset == section.address + edit.offset)
    }

    @Test func objectAgainstLibraryIsIncompatible() throws {
        let object = try Fixtures.compileFixture("diff_condition.c")
        let library = try Fixtures.compileFixture("diff_condition.c", flags: ["-O2", "-shared", "-fPIC"])
        #expect {
            _ = try ObjectDiff(original: try ELFFile(path: object.path), patched: try ELFFile(path: library.path))
        } throws: { "\($0)".contains("cannot be compared") }
    }

    // MARK: The article's patch on nfs.ko

    /// nfs.ko with one byte of nfs_flock changed, written through the section's file offset.
    func patchedNfs(offset: UInt64, from old: UInt8, to new: UInt8) throws -> (ELFFile, ELFFile) {
        let path = try Fixtures.debianKernel().nfsKo.path
        let original = try ELFFile(path: path)
        let text = try #require(original.section(named: ".text"))
        let flock = try #require(try original.symbols().first { $0.name == "nfs_flock" })
        var bytes = original.contents.bytes
        let at = Int(text.offset + flock.value + offset)
        #expect(bytes[at] == old)
        bytes[at] = new
        let folder = try Fixtures.temporaryFolder("nfs-patched")
        let copy = folder.appendingPathComponent("nfs.ko")
        try Data(bytes).write(to: copy)
        return (original, try ELFFile(path: copy.path))
    }

    @Test func nfsAgainstItselfIsEmpty() throws {
        let file = try ELFFile(path: try Fixtures.debianKernel().nfsKo.path)
        let diff = try ObjectDiff(original: file, patched: file)
        #expect(diff.isEmpty)
        #expect(diff.hunks.isEmpty && diff.notApplicable.isEmpty)
        #expect(diff.unchangedFunctions > 800)
        #expect(diff.module == "nfs" && diff.target?.release == "6.1.0-56-amd64")
        #expect {
            _ = try diff.bundle()
        } throws: { "\($0)".contains("no difference to patch") }
    }

    @Test func nfsFlockFlipIsTheArticlesHunk() throws {
        let (original, patched) = try patchedNfs(offset: 0x2f, from: 0x74, to: 0x75)
        let diff = try ObjectDiff(original: original, patched: patched)
        #expect(diff.functions.map(\.original.name) == ["nfs_flock"])
        #expect(diff.objects.isEmpty && diff.strings.isEmpty && diff.added.isEmpty && diff.removed.isEmpty)
        let bundle = try diff.bundle()
        #expect(bundle.hunks.count == 1)
        let hunk = try #require(bundle.hunks.first)
        #expect(hunk.location == "nfs_flock [nfs]+0x2f")
        #expect(hunk.expected == [0x74, 0x39] && hunk.replacement == [0x75, 0x39])
        #expect(hunk.module == "nfs" && hunk.mask == nil)
        #expect(bundle.target?.release == "6.1.0-56-amd64")
        // The run-pre image: nfs_flock whole, masked where RuntimeSites says the kernel rewrites it.
        let image = try #require(bundle.functions?.first)
        let text = try #require(original.section(named: ".text"))
        let flock = try #require(try original.symbols().first { $0.name == "nfs_flock" })
        #expect(image.symbol == "nfs_flock" && image.module == "nfs" && image.bytes.count == 122)
        #expect(image.bytes == (try original.data(of: text).view(offset: Int(flock.value), count: 122)).bytes)
        #expect(image.mask == (try RuntimeSites(object: original)).mask(section: text, range: flock.value..<flock.value + 122))

        // The report shows the instruction both ways.
        let unified = diff.render(style: .unified)
        #expect(unified.contains("-  928f:\t74 39"))
        #expect(unified.contains("+  928f:\t75 39"))
        #expect(unified.contains("nfs_flock [nfs]+0x2f: 74 39 → 75 39"))
        #expect(!unified.contains("\u{1b}["))
        #expect(diff.render(style: .unified, color: true).contains("\u{1b}[31m-"))
        let sideBySide = diff.render(style: .sideBySide(width: 160))
        #expect(sideBySide.split(separator: "\n").contains { $0.contains("74 39") && $0.contains(" | ") && $0.contains("75 39") })
        let json = try #require(try JSONSerialization.jsonObject(with: diff.jsonReport()) as? [String: Any])
        let hunks = try #require(json["hunks"] as? [[String: Any]])
        #expect(hunks.first?["offset"] as? String == "0x2f" && json["applicable"] as? Bool == true)
    }

    @Test func changingARewrittenByteIsRefused() throws {
        // nfs_flock+0x0 is the ftrace call (e8 → e9 keeps its length): the kernel NOPs it at load.
        let (original, patched) = try patchedNfs(offset: 0, from: 0xe8, to: 0xe9)
        let diff = try ObjectDiff(original: original, patched: patched)
        #expect(diff.hunks.isEmpty)
        #expect(diff.notApplicable.count == 1)
        #expect(diff.notApplicable.first?.hasPrefix("nfs_flock: +0x0: changes a byte the kernel rewrites at load: __mcount_loc") == true)
    }

    @Test func corruptObjectsGiveErrorsNotCrashes() throws {
        // Flip bytes of the symbol, string and relocation tables and of the section headers: every
        // diff either works or throws a typed error naming the file.
        let object = try Fixtures.compileFixture("diff_moved.c")
        let file = try ELFFile(path: object.path)
        let bytes = file.contents.bytes
        var targets: [Range<Int>] = [Int(file.header.sectionHeaderOffset)..<bytes.count]
        for section in file.sections where section.type == 2 || section.type == 3 || section.isRelocationTable {
            targets.append(Int(section.offset)..<Int(section.offset + section.size))
        }
        var generator = SplitMix64(seed: 0x5eed)
        var errors = 0
        for round in 0..<300 {
            var copy = bytes
            let range = targets[round % targets.count]
            for _ in 0..<3 {
                let at = range.lowerBound + Int(generator.next() % UInt64(range.count))
                copy[at] = UInt8(truncatingIfNeeded: generator.next())
            }
            do {
                let broken = try ELFFile(bytes: copy, name: "broken.o")
                _ = try ObjectDiff(original: file, patched: broken).render()
                _ = try ObjectDiff(original: broken, patched: file).render()
            } catch {
                errors += 1
                #expect("\(error)".contains("broken.o"), "\(error)")
            }
        }
        #expect(errors > 0)
    }

    // MARK: Edit scripts

    @Test func editScriptIsAShortestEdit() {
        // Against a dynamic-programming LCS: the script's kept pairs are as many as the LCS is long,
        // and replaying it turns one sequence into the other.
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let a = (0..<Int.random(in: 0...12, using: &generator)).map { _ in Int.random(in: 0...3, using: &generator) }
            let b = (0..<Int.random(in: 0...12, using: &generator)).map { _ in Int.random(in: 0...3, using: &generator) }
            var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
            for i in stride(from: a.count - 1, through: 0, by: -1) {
                for j in stride(from: b.count - 1, through: 0, by: -1) {
                    table[i][j] = a[i] == b[j] ? table[i + 1][j + 1] + 1 : max(table[i + 1][j], table[i][j + 1])
                }
            }
            let steps = EditScript(a, b).steps
            var replay: [Int] = []
            var kept = 0, deleted = 0
            for step in steps {
                switch step {
                case let .keep(i, j): #expect(a[i] == b[j]); replay.append(a[i]); kept += 1
                case .delete: deleted += 1
                case let .insert(j): replay.append(b[j])
                }
            }
            #expect(replay == b, "\(a) → \(b): \(steps)")
            #expect(kept == table[0][0] && kept + deleted == a.count, "\(a) → \(b)")
        }
    }
}
