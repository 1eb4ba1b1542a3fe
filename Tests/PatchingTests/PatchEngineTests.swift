import Foundation
import Testing
import TestSupport
import ELF
import Symbols
import Disassembly
import Targets
@testable import Patching

/// The engine against real processes: gcc builds the victim, ProcessTarget stops its threads.
@Suite(.serialized) struct PatchEngineTests {
    static func victim() throws -> URL {
        try Fixtures.compileFixture("victim.c", flags: ["-O0", "-pthread", "-g0"])
    }

    /// The address of the first conditional jump in `function`, found by our own disassembler over
    /// the live bytes and cross-checked with objdump's offset.
    func jcc(in function: String, symbols: SymbolIndex, target: MemoryTarget, executable: URL) throws -> UInt64 {
        let symbol = try symbols.resolve(name: function)
        let code = try target.read(at: symbol.address, count: Int(symbol.size ?? 64))
        let insn = try #require(try Disassembler(architecture: .x86_64).decode(code, address: symbol.address)
            .first { $0.branch == .conditionalJump })
        let oracle = try TargetFixtures.conditionalJump(in: function, of: executable)
        #expect(insn.address - symbol.address == oracle.offset, "objdump puts the jump elsewhere")
        return insn.address
    }

    struct Setup {
        let program: LiveProgram
        let target: ProcessTarget
        let symbols: SymbolIndex
        let engine: PatchEngine
    }

    func start(_ arguments: [String] = ["3"]) throws -> Setup {
        let exe = try Self.victim()
        let program = try LiveProgram(exe, arguments: arguments)
        do {
            let target = try ProcessTarget(pid: program.pid)
            let symbols = try ProcessSymbols.load(pid: program.pid)
            let journal = Journal(directory: try Fixtures.temporaryFolder("engine-state").path)
            return Setup(program: program, target: target, symbols: symbols,
                         engine: PatchEngine(target: target, targetName: "pid:\(program.pid)", symbols: symbols, journal: journal))
        } catch {
            program.stop()
            throw error
        }
    }

    @Test func flipChangesBehaviourAndRevertRestoresIt() throws {
        let s = try start()
        defer { s.target.close(); s.program.stop() }
        try s.program.waitForLine { $0 == "result 1 1" }
        let address = try jcc(in: "check", symbols: s.symbols, target: s.target, executable: s.program.executable)
        let before = try s.target.read(at: address, count: 2)

        let bundle = try HandPatch(target: s.target, symbols: s.symbols).flip(at: address)
        #expect(bundle.hunks.count == 1)
        #expect(bundle.hunks[0].symbol == "check")
        #expect(bundle.hunks[0].expected == before)
        #expect(bundle.target?.buildID != nil, "the bundle is bound to the executable's build-id")

        let result = try s.engine.apply(bundle)
        #expect(!result.dryRun)
        #expect(result.pause != nil)
        #expect(result.preflight.findings.map(\.check) == [.identity, .bytes, .boundaries, .busy])
        #expect(result.preflight.findings.allSatisfy { $0.passed })
        let seen = s.program.linesSeen
        try s.program.waitForLine(after: seen) { $0 == "result 0 1" }
        let flippedByte = try s.target.read(at: address, count: 1)
        #expect(flippedByte == [before[0] ^ 1])
        #expect(try s.engine.status().map(\.live) == [.applied])

        _ = try s.engine.revert(id: bundle.id)
        try s.program.waitForLine(after: s.program.linesSeen) { $0 == "result 1 1" }
        #expect(try s.target.read(at: address, count: 2) == before)
        #expect(try s.engine.status().map(\.live) == [.reverted])
        let events = try s.engine.journal.records().map(\.event)
        #expect(events == [.applyIntent, .applyDone, .revertIntent, .revertDone])
    }

    @Test func dryRunWritesNothing() throws {
        let s = try start()
        defer { s.target.close(); s.program.stop() }
        let address = try jcc(in: "check", symbols: s.symbols, target: s.target, executable: s.program.executable)
        let before = try s.target.read(at: address, count: 2)
        let result = try s.engine.apply(try HandPatch(target: s.target, symbols: s.symbols).flip(at: address), dryRun: true)
        #expect(result.dryRun)
        #expect(result.preflight.findings.contains { $0.check == .busy && $0.passed })
        #expect(try s.target.read(at: address, count: 2) == before)
        #expect(try s.engine.journal.records().isEmpty)
    }

    @Test func mismatchedBytesAreRefusedAndNothingIsWritten() throws {
        let s = try start()
        defer { s.target.close(); s.program.stop() }
        let address = try jcc(in: "check", symbols: s.symbols, target: s.target, executable: s.program.executable)
        let before = try s.target.read(at: address, count: 2)
        let wrong = before[0] ^ 0x0f
        let bundle = try HandPatch(target: s.target, symbols: s.symbols)
            .poke(at: address, expected: [wrong], replacement: [before[0] ^ 1])
        #expect {
            try s.engine.apply(bundle)
        } throws: { error in
            guard case let PatchError.refused(findings) = error else { return false }
            let bytes = findings.first { $0.check == .bytes }
            return bytes?.passed == false && bytes!.detail.contains("expected \(Hex.bytes([wrong, before[1]])), found \(Hex.bytes(before))")
        }
        #expect(try s.target.read(at: address, count: 2) == before)
        #expect(try s.engine.journal.records().isEmpty)
        try s.program.waitForLine(after: s.program.linesSeen) { $0 == "result 1 1" }
    }

    @Test func flipRefusesWhatIsNotAConditionalJump() throws {
        let s = try start()
        defer { s.target.close(); s.program.stop() }
        let symbol = try s.symbols.resolve(name: "check")
        #expect { try HandPatch(target: s.target, symbols: s.symbols).flip(at: symbol.address) } throws: { error in
            "\(error)".contains("push") || "\(error)".contains("endbr64")
        }
    }

    @Test func hunkStartingInsideAnInstructionIsRefused() throws {
        let s = try start()
        defer { s.target.close(); s.program.stop() }
        let address = try jcc(in: "check", symbols: s.symbols, target: s.target, executable: s.program.executable)
        let live = try s.target.read(at: address, count: 2)
        // The jump's displacement byte alone: it starts inside the instruction.
        let bundle = PatchBundle(target: try s.target.identity(), architecture: "x86_64",
                                 hunks: [Hunk(symbol: "check", offset: address + 1 - (try s.symbols.resolve(name: "check").address),
                                              expected: [live[1]], replacement: [live[1] &+ 1])])
        #expect { try s.engine.apply(bundle) } throws: { error in
            guard case let PatchError.refused(findings) = error else { return false }
            return findings.contains { $0.check == .boundaries && !$0.passed && $0.detail.contains("starts inside an instruction") }
        }
        #expect(try s.target.read(at: address, count: 2) == live)
    }

    @Test func threadInsideTheHunkMakesItBusy() throws {
        let s = try start(["1", "spin"])
        defer { s.target.close(); s.program.stop() }
        let spin = try s.symbols.resolve(name: "spin")
        let code = try s.target.read(at: spin.address, count: Int(spin.size ?? 16))
        let instructions = try Disassembler(architecture: .x86_64).decode(code, address: spin.address)
        // The spinning thread sits on the loop's `jmp` to itself.
        let loop = try #require(instructions.first { $0.branch == .jump && $0.target == $0.address })
        let bundle = try HandPatch(target: s.target, symbols: s.symbols)
            .poke(at: loop.address, expected: loop.bytes, replacement: [UInt8](repeating: 0x90, count: loop.size))
        let engine = s.engine
        #expect {
            _ = try engine.apply(bundle, options: PreflightOptions(busyAttempts: 3, busyBackoffMicroseconds: 1000))
        } throws: { error in
            guard case let PatchError.refused(findings) = error else { return false }
            return findings.contains { $0.check == .busy && !$0.passed && $0.detail.contains("spin+") && $0.detail.contains("after 3 attempts") }
        }
        #expect(try s.target.read(at: loop.address, count: loop.size) == loop.bytes)
        #expect(try engine.status().map(\.record.state) == [.reverted], "the aborted apply is journaled as aborted")
        #expect(s.program.state != nil)
    }

    @Test func identityOfAnotherBuildIsRefused() throws {
        let s = try start()
        defer { s.target.close(); s.program.stop() }
        let address = try jcc(in: "check", symbols: s.symbols, target: s.target, executable: s.program.executable)
        var bundle = try HandPatch(target: s.target, symbols: s.symbols).flip(at: address)
        bundle.target?.buildID = "00112233445566778899aabbccddeeff00112233"
        #expect { try s.engine.apply(bundle) } throws: { error in
            guard case let PatchError.refused(findings) = error else { return false }
            return findings.contains { $0.check == .identity && !$0.passed && $0.detail.contains("build-id: bundle 0011") }
        }
        // Forcing exactly that check lets it through.
        let forced = try s.engine.apply(bundle, options: PreflightOptions(force: [.identity]))
        #expect(forced.preflight.findings.first { $0.check == .identity }?.forced == true)
        try s.program.waitForLine(after: s.program.linesSeen) { $0 == "result 0 1" }
        _ = try s.engine.revert(id: bundle.id)
    }

    @Test func revertRefusesDrift() throws {
        let s = try start()
        defer { s.target.close(); s.program.stop() }
        let address = try jcc(in: "check", symbols: s.symbols, target: s.target, executable: s.program.executable)
        let bundle = try HandPatch(target: s.target, symbols: s.symbols).flip(at: address)
        _ = try s.engine.apply(bundle)
        let patched = try s.target.read(at: address, count: 2)
        // Someone else rewrites the jump behind Suture's back (into a `jmp` to the same target, so
        // the victim keeps running).
        try s.target.stop()
        try s.target.write(at: address, bytes: [0xeb])
        try s.target.resume()
        #expect(try s.engine.status().map(\.live) == [.drifted])
        #expect { try s.engine.revert(id: bundle.id) } throws: {
            "\($0)".contains("holds eb \(Hex.bytes([patched[1]])), not the \(Hex.bytes(patched)) Suture wrote")
        }
        _ = try s.engine.revert(id: bundle.id, force: true)
        #expect(try s.engine.status().map(\.live) == [.reverted])
    }
}
