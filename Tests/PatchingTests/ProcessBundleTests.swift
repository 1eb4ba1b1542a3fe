import Foundation
import Testing
import TestSupport
import ELF
import Symbols
import Disassembly
import Targets
@testable import Patching

/// Bundles made from two builds (`ObjectDiff` of executables and shared libraries) and hand-made
/// data pokes, applied by the engine to real processes built by gcc from process_host.c and
/// process_lib.c. The oracle is the program's own output: it prints what gate() and parse_header()
/// return and the .rodata string it uses, every 2 ms.
@Suite(.serialized) struct ProcessBundleTests {
    static let flags = ["-O0", "-g0", "-pthread"]

    /// process_host.c built with `defines` into its own folder (same folder: same file, so the
    /// builds differ only by what the defines change, and by their build-ids).
    static func host(_ defines: [String] = []) throws -> URL {
        try Fixtures.compileFixture("process_host.c", flags: flags + defines + ["-ldl"], in: Fixtures.temporaryFolder("process-host"))
    }

    static func library(_ defines: [String] = []) throws -> URL {
        try Fixtures.compileFixture("process_lib.c", flags: ["-O0", "-g0", "-fPIC", "-shared"] + defines,
                                    in: Fixtures.temporaryFolder("process-lib"))
    }

    struct Live {
        let program: LiveProgram
        let target: ProcessTarget
        let snapshot: ProcessSymbols.Snapshot
        let engine: PatchEngine
        func close() { target.close(); program.stop() }

        /// Waits for an output line printed after now.
        func expectLine(_ matches: @escaping (String) -> Bool) throws {
            try program.waitForLine(after: program.linesSeen, matches)
        }
    }

    func start(_ exe: URL, _ arguments: [String] = []) throws -> Live {
        let program = try LiveProgram(exe, arguments: arguments)
        do {
            let target = try ProcessTarget(pid: program.pid)
            let snapshot = try ProcessSymbols.snapshot(pid: program.pid)
            let journal = Journal(directory: try Fixtures.temporaryFolder("process-state").path)
            return Live(program: program, target: target, snapshot: snapshot,
                        engine: PatchEngine(target: target, targetName: "pid:\(program.pid)", symbols: snapshot.index, journal: journal))
        } catch {
            program.stop()
            throw error
        }
    }

    static func diff(_ a: URL, _ b: URL) throws -> PatchBundle {
        try ObjectDiff(original: ELFFile(path: a.path), patched: ELFFile(path: b.path)).bundle()
    }

    static func buildID(_ file: URL) throws -> String {
        let notes = try Fixtures.check("readelf", ["-n", file.path])
        guard let line = notes.split(separator: "\n").first(where: { $0.contains("Build ID:") }) else { throw Fixtures.Failure("no build-id in \(file.path)") }
        return String(line.split(separator: " ").last!)
    }

    /// The live address of a NUL-terminated string in the executable's read-only data, found with
    /// the ELF module in the file and moved by the image's load bias.
    static func stringAddress(_ text: String, in exe: URL, snapshot: ProcessSymbols.Snapshot) throws -> UInt64 {
        let elf = try ELFFile(path: exe.path)
        let rodata = try #require(elf.section(named: ".rodata"))
        let bytes = Array(try elf.data(of: rodata))
        let needle = Array(text.utf8) + [0]
        let at = try #require((0...(bytes.count - needle.count)).first { bytes[$0..<($0 + needle.count)].elementsEqual(needle) })
        return try #require(snapshot.executable).runtimeAddress(ofFileAddress: rodata.address + UInt64(at))
    }

    // MARK: Diff bundles of an executable

    @Test func diffBundleOfTwoBuildsAppliesAndReverts() throws {
        let old = try Self.host(), new = try Self.host(["-DLESS"])
        let bundle = try Self.diff(old, new)
        #expect(bundle.target?.buildID == (try Self.buildID(old)), "the bundle is for the old build")
        #expect(bundle.hunks.count == 2, "the compare's immediate and the jump")
        let s = try start(old)
        defer { s.close() }
        try s.expectLine { $0.hasPrefix("gate 1 ") }
        let bound = ProcessBinding.bind(bundle, images: s.snapshot.images, symbols: s.snapshot.index)
        #expect(bound.image?.isMainExecutable == true)
        let result = try s.engine.apply(bound.bundle)
        #expect(result.preflight.findings.map(\.check) == [.identity, .bytes, .function, .boundaries, .busy])
        #expect(result.preflight.findings.allSatisfy { $0.passed })
        #expect(result.preflight.spansInstructions == [true, true], "two hunks in gate guard all of gate")
        try s.expectLine { $0.hasPrefix("gate 0 ") }
        #expect(try s.engine.status().map(\.live) == [.applied])
        _ = try s.engine.revert(id: bundle.id)
        try s.expectLine { $0.hasPrefix("gate 1 ") }
        #expect(try s.engine.status().map(\.live) == [.reverted])
    }

    @Test func threadInsideAChangedFunctionRefusesAMultiInstructionChange() throws {
        let old = try Self.host(), new = try Self.host(["-DLESS"])
        let bundle = try Self.diff(old, new)
        // A thread spins in gate()'s loop, after the condition: outside both hunks, inside gate.
        let s = try start(old, ["spin"])
        defer { s.close() }
        let gate = try s.snapshot.index.resolve(name: "gate")
        let before = try s.target.read(at: gate.address, count: Int(gate.size ?? 0))
        #expect {
            try s.engine.apply(bundle, options: PreflightOptions(busyAttempts: 3, busyBackoffMicroseconds: 1000))
        } throws: { error in
            guard case let PatchError.refused(findings) = error else { return false }
            return findings.contains { $0.check == .busy && !$0.passed && $0.detail.contains("gate+0x") && $0.detail.contains("after 3 attempts") }
        }
        #expect(try s.target.read(at: gate.address, count: before.count) == before, "nothing written")
        // One instruction alone (flip the condition's jump) is guarded by its own bytes only.
        let jump = try #require(bundle.hunks.first { $0.expected.count == 2 })
        let flip = try HandPatch(target: s.target, symbols: s.snapshot.index).flip(at: gate.address + jump.offset)
        let result = try s.engine.apply(flip)
        #expect(result.preflight.spansInstructions == [false])
        try s.expectLine { $0.hasPrefix("gate 0 ") }
        // Its revert is one instruction too: the spinner in gate() does not block it.
        _ = try s.engine.revert(id: flip.id, options: PreflightOptions(busyAttempts: 3, busyBackoffMicroseconds: 1000))
        try s.expectLine { $0.hasPrefix("gate 1 ") }
    }

    @Test func revertOfAMultiInstructionChangeWaitsForTheFunction() throws {
        let old = try Self.host(), new = try Self.host(["-DLESS"])
        let bundle = try Self.diff(old, new)
        let s = try start(old, ["spin"])
        defer { s.close() }
        // Applied while nobody is in gate() is impossible with the spinner there: force busy for
        // the apply only, to have something to revert.
        _ = try s.engine.apply(bundle, options: PreflightOptions(force: [.busy]))
        try s.expectLine { $0.hasPrefix("gate 0 ") }
        #expect {
            try s.engine.revert(id: bundle.id, options: PreflightOptions(busyAttempts: 2, busyBackoffMicroseconds: 1000))
        } throws: { error in
            guard case let PatchError.refused(findings) = error else { return false }
            return findings.contains { $0.check == .busy && $0.detail.contains("gate+0x2") }
        }
        try s.expectLine { $0.hasPrefix("gate 0 ") }
        #expect(try s.engine.status().map(\.live) == [.applied])
    }

    @Test func bundleOfAnotherBuildIsRefusedByIdentity() throws {
        let old = try Self.host(), new = try Self.host(["-DLESS"])
        let other = try Self.host(["-DLIMIT=6"])
        #expect(try Self.buildID(old) != (try Self.buildID(other)))
        let bundle = try Self.diff(old, new)
        let s = try start(other)
        defer { s.close() }
        #expect {
            try s.engine.apply(ProcessBinding.bind(bundle, images: s.snapshot.images, symbols: s.snapshot.index).bundle)
        } throws: { error in
            guard case let PatchError.refused(findings) = error else { return false }
            return findings.contains { $0.check == .identity && !$0.passed
                && $0.detail.contains("build-id: bundle \(bundle.target!.buildID!), target \(try! Self.buildID(other))") }
        }
        try s.expectLine { $0.hasPrefix("gate 1 ") }
        #expect(try s.engine.journal.records().isEmpty)
    }

    // MARK: Data

    @Test func rodataStringFromADiffBundle() throws {
        let old = try Self.host(), new = try Self.host(["-DGREETING=\"HELLO-world\""])
        let bundle = try Self.diff(old, new)
        #expect(bundle.hunks.count == 1)
        #expect(bundle.hunks[0].expected == Array("hello-world".utf8) + [0])
        let s = try start(old)
        defer { s.close() }
        try s.expectLine { $0.hasSuffix("greeting hello-world") }
        let result = try s.engine.apply(ProcessBinding.bind(bundle, images: s.snapshot.images, symbols: s.snapshot.index).bundle)
        let boundaries = try #require(result.preflight.findings.first { $0.check == .boundaries })
        #expect(boundaries.passed && boundaries.detail.contains("data: no instruction boundaries (r--p mapping of \(old.path))"), "\(boundaries.detail)")
        #expect(result.hunks[0].address == (try Self.stringAddress("hello-world", in: old, snapshot: s.snapshot)))
        try s.expectLine { $0.hasSuffix("greeting HELLO-world") }
        _ = try s.engine.revert(id: bundle.id)
        try s.expectLine { $0.hasSuffix("greeting hello-world") }
    }

    @Test func rodataStringPokedAtItsAddress() throws {
        let exe = try Self.host()
        let s = try start(exe)
        defer { s.close() }
        let address = try Self.stringAddress("hello-world", in: exe, snapshot: s.snapshot)
        #expect(try s.target.read(at: address, count: 12) == Array("hello-world".utf8) + [0])
        let bundle = try HandPatch(target: s.target, symbols: s.snapshot.index)
            .poke(at: address, expected: Array("hello".utf8), replacement: Array("howdy".utf8))
        #expect(bundle.hunks[0].expected == Array("hello".utf8), "data is not widened to instructions")
        let result = try s.engine.apply(bundle)
        #expect(result.preflight.findings.first { $0.check == .boundaries }?.detail.contains("data: no instruction boundaries") == true)
        try s.expectLine { $0.hasSuffix("greeting howdy-world") }
        _ = try s.engine.revert(id: bundle.id)
        try s.expectLine { $0.hasSuffix("greeting hello-world") }
    }

    @Test func dataHunkOnATargetThatCannotStopIsOneAlignedStore() throws {
        // The same checks, as a kernel target that cannot be stopped sees them: data needs no
        // instruction around the store, only a naturally aligned one.
        let h = ResolvedHunk(hunk: Hunk(symbol: nil, offset: 0, address: 0x1000, expected: [1, 2, 3, 4], replacement: [1, 2, 9, 4]),
                             address: 0x1000, function: nil)
        #expect(AtomicStoreCheck(hunks: [h], instructions: [[]], isData: [true]).run().passed)
        #expect(!AtomicStoreCheck(hunks: [h], instructions: [[]], isData: [false]).run().passed)
        let classifier = HunkPlacementClassifier(mappings: nil, symbols: SymbolIndex([
            SymbolRecord(name: "banner", address: 0x1000, kind: "r", size: 16),
            SymbolRecord(name: "f", address: 0x2000, kind: "t", size: 16),
        ]))
        #expect(classifier.classify(0x1004..<0x1008, function: nil) == .data(reason: "data object banner (r)"))
        #expect(classifier.classify(0x100c..<0x1014, function: nil) == .unknown, "leaves the object")
        #expect(classifier.classify(0x2004..<0x2006, function: SymbolRecord(name: "f", address: 0x2000, kind: "t", size: 16)) == .code)
    }

    // MARK: A library of our own

    @Test func libraryBundleAppliesToTheProcessThatMapsIt() throws {
        let old = try Self.library(), new = try Self.library(["-DHEADER_LIMIT=40"])
        let bundle = try Self.diff(old, new)
        #expect(bundle.target?.buildID == (try Self.buildID(old)))
        #expect(bundle.hunks.allSatisfy { $0.module == nil }, "the library knows no module name")
        let s = try start(try Self.host(), [old.path])
        defer { s.close() }
        try s.expectLine { $0.contains(" lib 1 ") }
        let bound = ProcessBinding.bind(bundle, images: s.snapshot.images, symbols: s.snapshot.index)
        #expect(bound.image?.module == old.lastPathComponent)
        #expect(bound.bundle.hunks.allSatisfy { $0.module == old.lastPathComponent })
        let result = try s.engine.apply(bound.bundle)
        let identity = try #require(result.preflight.findings.first { $0.check == .identity })
        #expect(identity.passed && identity.detail.contains("\(old.lastPathComponent) (build-id \(bundle.target!.buildID!)) is mapped"), "\(identity.detail)")
        try s.expectLine { $0.contains(" lib 0 ") }
        _ = try s.engine.revert(id: bundle.id)
        try s.expectLine { $0.contains(" lib 1 ") }
    }

    @Test func bindingNarrowsNamesToTheImage() throws {
        let images = [
            ProcessSymbols.Image(path: "/bin/x", module: nil, isMainExecutable: true, bias: 0, buildID: "aa", mappings: [], source: .symtab, symbolCount: 2),
            ProcessSymbols.Image(path: "/lib/libfoo.so", module: "libfoo.so", isMainExecutable: false, bias: 0, buildID: "bb", mappings: [], source: .symtab, symbolCount: 2),
        ]
        let index = SymbolIndex([
            SymbolRecord(name: "helper", address: 0x1000, kind: "t", size: 8),
            SymbolRecord(name: "helper", address: 0x7000, kind: "t", size: 8, module: "libfoo.so"),
            SymbolRecord(name: "helper", address: 0x7100, kind: "t", size: 8, module: "libfoo.so"),
        ])
        let hunk = Hunk(symbol: "helper", offset: 2, expected: [1], replacement: [2])
        func bundle(_ id: String, _ hunks: [Hunk]) -> PatchBundle {
            PatchBundle(target: TargetIdentity(kind: .process, buildID: id), architecture: "x86_64", hunks: hunks)
        }
        // The executable's helper is the first of three in the process.
        let exe = ProcessBinding.bind(bundle("aa", [hunk]), images: images, symbols: index)
        #expect(exe.bundle.hunks[0].ordinal == 1 && exe.bundle.hunks[0].module == nil)
        #expect(try ResolvedHunk.resolve(exe.bundle.hunks[0], symbols: index).address == 0x1002)
        // The library's second helper (its own /2) is the process' third.
        var second = hunk
        second.ordinal = 2
        let lib = ProcessBinding.bind(bundle("bb", [second]), images: images, symbols: index)
        #expect(lib.bundle.hunks[0].module == "libfoo.so" && lib.bundle.hunks[0].ordinal == 3)
        #expect(try ResolvedHunk.resolve(lib.bundle.hunks[0], symbols: index).address == 0x7102)
        // Ambiguous within the library and no ordinal: left for resolve to report.
        #expect(ProcessBinding.bind(bundle("bb", [hunk]), images: images, symbols: index).changes.isEmpty)
        // Another build: unchanged, and the identity check will refuse it.
        #expect(ProcessBinding.bind(bundle("cc", [hunk]), images: images, symbols: index).image == nil)
    }

    // MARK: Bad input

    @Test func libraryClosedBetweenPreflightAndWriteAbortsWithNothingWritten() throws {
        let library = try Self.library()
        // A thread sits in hold() until the library is closed: the first hunk (two NOPs at hold's
        // start) is busy until then, so the engine resumes and retries, and the dlclose() lands
        // between preflight and the write.
        let s = try start(try Self.host(), [library.path, "nops"])
        defer { s.close() }
        let hold = try s.snapshot.index.resolve(name: "hold")
        let code = try s.target.read(at: hold.address, count: Int(hold.size ?? 0))
        let nops = try #require(Disassembler(architecture: .x86_64).decode(code, address: hold.address)
            .first { $0.bytes == [0x90] && code[Int($0.address - hold.address) + 1] == 0x90 })
        let parse = try s.snapshot.index.resolve(name: "parse_header", module: library.lastPathComponent)
        let jump = try #require(Disassembler(architecture: .x86_64).decode(try s.target.read(at: parse.address, count: Int(parse.size ?? 0)),
                                                                           address: parse.address).first { $0.branch == .conditionalJump })
        let bundle = PatchBundle(id: "hold-and-parse", target: try s.target.identity(), architecture: "x86_64", hunks: [
            Hunk(symbol: "hold", offset: nops.address - hold.address, expected: [0x90, 0x90], replacement: [0x66, 0x90]),
            Hunk(symbol: "parse_header", module: library.lastPathComponent, offset: jump.address - parse.address,
                 expected: jump.bytes, replacement: [jump.bytes[0] ^ 1] + jump.bytes.dropFirst()),
        ])
        let engine = s.engine
        let pid = s.program.pid
        // Close the library once the engine has found hold() busy at least once.
        let closer = Thread {
            usleep(150_000)
            kill(pid, SIGUSR1)
        }
        closer.start()
        #expect {
            try engine.apply(bundle, options: PreflightOptions(busyAttempts: 12, busyBackoffMicroseconds: 50_000))
        } throws: { error in
            guard let target = error as? TargetError, case let .unmappedAddress(_, address, _, _) = target else { return false }
            return address == jump.address
        }
        try s.expectLine { $0 == "closed" || $0.contains(" lib -1 ") }
        #expect(try s.target.read(at: nops.address, count: 2) == [0x90, 0x90], "the first hunk was put back")
        let events = try engine.journal.records().map(\.event)
        #expect(events == [.applyIntent, .applyAborted])
        #expect(try engine.status().map(\.record.state) == [.reverted])
    }

    @Test func processExitingMidApplyClosesTheJournal() throws {
        let old = try Self.host(), new = try Self.host(["-DLESS"])
        let bundle = try Self.diff(old, new)
        let s = try start(old)
        defer { s.close() }
        var engine = s.engine
        engine.delayAfterEachHunkMicroseconds = 600_000
        let journal = engine.journal
        let pid = s.program.pid
        let killer = Thread {
            // SIGKILL reaches a ptrace-stopped process too: it dies between the two hunks.
            let end = Date().addingTimeInterval(10)
            while Date() < end, !(((try? journal.records()) ?? []).contains { $0.event == .applyIntent }) { usleep(5_000) }
            usleep(200_000)
            kill(pid, SIGKILL)
        }
        killer.start()
        #expect {
            try engine.apply(bundle)
        } throws: { error in
            guard let target = error as? TargetError, case let .processExited(gone, _) = target else { return false }
            return gone == pid && "\(error)".contains("pid:\(pid): the process exited")
        }
        let records = try journal.records()
        #expect(records.map(\.event) == [.applyIntent, .applyAborted])
        #expect(records.last?.note?.contains("the process exited during the write") == true)
        #expect(try journal.patches(target: "pid:\(pid)").map(\.state) == [.reverted], "nothing left to recover")
    }
}
