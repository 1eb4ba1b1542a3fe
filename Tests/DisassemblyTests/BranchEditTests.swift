import Disassembly
import ELF
import Foundation
import Testing
import TestSupport

@Suite("BranchEdit")
struct BranchEditTests {
    /// Each x86 condition and its negation, by objdump's (and Capstone's) names.
    static let x86Opposites: [String: String] = {
        let pairs = [("jo", "jno"), ("jb", "jae"), ("je", "jne"), ("jbe", "ja"), ("js", "jns"), ("jp", "jnp"),
                     ("jl", "jge"), ("jle", "jg")]
        var table: [String: String] = [:]
        for (a, b) in pairs { table[a] = b; table[b] = a }
        return table
    }()

    /// Every Jcc encoding (short 70-7f, near 0f 80-8f), bare and behind branch-hint, bnd, REX and
    /// operand-size prefixes.
    static func x86Jumps() -> [[UInt8]] {
        var encodings: [[UInt8]] = []
        for prefixes: [UInt8] in [[], [0x3E], [0x2E], [0xF2], [0x48], [0x3E, 0x48], [0x66]] {
            for cc in 0..<16 {
                encodings.append(prefixes + [0x70 + UInt8(cc), 0x10])
                encodings.append(prefixes + [0x0F, 0x80 + UInt8(cc)] + (prefixes == [0x66] ? [0x20, 0x00] : [0x20, 0x01, 0x00, 0x00]))
            }
        }
        return encodings
    }

    @Test("every x86 Jcc inverts to the opposite condition, same length and target, per objdump")
    func x86AllConditions() throws {
        let encodings = Self.x86Jumps()
        let disassembler = try Disassembler(architecture: .x86_64)
        var original: [UInt8] = [], inverted: [UInt8] = []
        for bytes in encodings {
            let insn = try #require(disassembler.decodeOne(bytes, address: UInt64(original.count)))
            #expect(insn.size == bytes.count && insn.branch == .conditionalJump, "\(insn.summary)")
            let flipped = try BranchEdit.invertConditionalJump(insn, architecture: .x86_64)
            #expect(flipped.count == bytes.count)
            // Capstone on the new bytes: the opposite condition, the same target.
            let again = try #require(disassembler.decodeOne(flipped, address: insn.address))
            #expect(Self.x86Opposites[Comparison.root(insn.mnemonic)] == Comparison.root(again.mnemonic),
                    "\(insn.summary) → \(again.summary)")
            #expect(again.target == insn.target && again.size == insn.size)
            original += bytes
            inverted += flipped
        }
        // objdump on both streams: same layout and targets, opposite conditions.
        let before = try Objdump.raw(original, machine: "i386:x86-64")
        let after = try Objdump.raw(inverted, machine: "i386:x86-64")
        try #require(before.count == encodings.count && after.count == encodings.count,
                     "objdump found \(before.count) and \(after.count) instructions, expected \(encodings.count)")
        for (b, a) in zip(before, after) {
            #expect(b.address == a.address && b.bytes.count == a.bytes.count)
            #expect(Objdump.branchTarget(b) != nil && Objdump.branchTarget(b) == Objdump.branchTarget(a),
                    "\(b.mnemonic) \(b.operands) vs \(a.mnemonic) \(a.operands)")
            #expect(Self.x86Opposites[b.mnemonic] == a.mnemonic, "\(Hex.bytes(b.bytes)) \(b.mnemonic) → \(Hex.bytes(a.bytes)) \(a.mnemonic)")
            // Prefixes stay as they were (the hint, bnd, rex.W).
            #expect(b.prefixes == a.prefixes)
        }
    }

    @Test("i386: Jcc invert; 40-4f are inc/dec there, not REX")
    func i386() throws {
        let disassembler = try Disassembler(architecture: .i386)
        let near = try #require(disassembler.decodeOne([0x0F, 0x8E, 0x10, 0x00, 0x00, 0x00], address: 0x1000))
        #expect(try BranchEdit.invertConditionalJump(near, architecture: .i386) == [0x0F, 0x8F, 0x10, 0x00, 0x00, 0x00])
        let inc = try #require(disassembler.decodeOne([0x48], address: 0))
        #expect(inc.mnemonic.hasPrefix("dec"))
        #expect(throws: DisassemblyError.self) { try BranchEdit.invertConditionalJump(inc, architecture: .i386) }
    }

    @Test("refuses jcxz, loop, jmp, call, ret, nop and (bad), naming the instruction", arguments: [
        [0xE3, 0x10], [0x67, 0xE3, 0x10], [0xE2, 0x10], [0xE1, 0x10], [0xE0, 0x10], [0xEB, 0x10],
        [0xE9, 0x00, 0x01, 0x00, 0x00], [0xE8, 0x00, 0x00, 0x00, 0x00], [0xC3], [0x90], [0x0F, 0x1F, 0x00],
        [0xFF, 0xE0], [0x06],
    ] as [[UInt8]])
    func x86Refusals(bytes: [UInt8]) throws {
        let disassembler = try Disassembler(architecture: .x86_64)
        let insn = try #require(disassembler.decodeOne(bytes, address: 0xffff_ffff_c03b_2290))
        do {
            let result = try BranchEdit.invertConditionalJump(insn, architecture: .x86_64)
            Issue.record("inverted \(insn.summary) into \(Hex.bytes(result))")
        } catch {
            let message = error.description
            #expect(message.contains("0xffffffffc03b2290"))
            #expect(message.contains(Hex.bytes(insn.bytes)))
            #expect(message.contains(insn.mnemonic))
            #expect(message.contains("expected a conditional jump"))
        }
    }

    /// A gcc-built program whose output depends on one jle: inverting it in the executable file
    /// makes the program print the other word.
    @Test("gcc program: inverting the jump in the file flips its behaviour")
    func flipAndRun() throws {
        let folder = try Fixtures.temporaryFolder("suture-flip")
        defer { try? FileManager.default.removeItem(at: folder) }
        let program = try Fixtures.compileFixture("disasm_flip.c", flags: ["-O2"], in: folder)
        #expect(try Fixtures.check(program.path, ["7"]) == "big\n")
        #expect(try Fixtures.check(program.path, ["3"]) == "small\n")

        let symbol = try Readelf.symbol("report", in: program)
        let text = try Readelf.section(".text", in: program)
        var file = [UInt8](try Data(contentsOf: program))
        let start = Int(text.offset + (symbol.value - text.address))
        let disassembler = try Disassembler(architecture: .x86_64)
        let code = disassembler.decode(file[start..<start + Int(symbol.size)], address: symbol.value)
        let jumps = code.filter { $0.branch == .conditionalJump }
        try #require(jumps.count == 1, "report should hold one conditional jump: \(code.map(\.summary))")
        let jump = jumps[0]
        let inverted = try BranchEdit.invertConditionalJump(jump, architecture: .x86_64)
        let at = start + Int(jump.address - symbol.value)
        file.replaceSubrange(at..<at + inverted.count, with: inverted)
        let patched = folder.appendingPathComponent("disasm_flip.patched")
        try Data(file).write(to: patched)
        try Fixtures.check("chmod", ["+x", patched.path])

        // objdump on the patched file: the opposite condition to the same place.
        let listing = Objdump.lines(try Objdump.output(["-d", "-w", "--start-address=\(Hex.address(jump.address))",
                                                         "--stop-address=\(Hex.address(jump.endAddress))"], of: patched))
        let line = try #require(listing.first)
        #expect(line.bytes == inverted)
        #expect(Self.x86Opposites[Comparison.root(jump.mnemonic)] == line.mnemonic)
        #expect(Objdump.branchTarget(line) == jump.target)

        #expect(try Fixtures.check(patched.path, ["7"]) == "small\n")
        #expect(try Fixtures.check(patched.path, ["3"]) == "big\n")
    }

    // MARK: arm64

    /// Hand-assembled words (ARM ARM encodings), each a branch to 0x40 from address 0.
    static let arm64Branches: [(word: UInt32, name: String, opposite: String)] = [
        (0x5400_0200, "b.eq", "b.ne"), (0x5400_0201, "b.ne", "b.eq"),
        (0x5400_0202, "b.hs", "b.lo"), (0x5400_0203, "b.lo", "b.hs"),
        (0x5400_0204, "b.mi", "b.pl"), (0x5400_0205, "b.pl", "b.mi"),
        (0x5400_0206, "b.vs", "b.vc"), (0x5400_0207, "b.vc", "b.vs"),
        (0x5400_0208, "b.hi", "b.ls"), (0x5400_0209, "b.ls", "b.hi"),
        (0x5400_020A, "b.ge", "b.lt"), (0x5400_020B, "b.lt", "b.ge"),
        (0x5400_020C, "b.gt", "b.le"), (0x5400_020D, "b.le", "b.gt"),
        (0x3400_0200, "cbz", "cbnz"), (0xB500_0200, "cbnz", "cbz"),        // cbz w0 / cbnz x0
        (0x3600_0203, "tbz", "tbnz"), (0xB728_0203, "tbnz", "tbz"),        // tbz w3, #0 / tbnz x3, #37
    ]

    static func littleEndian(_ word: UInt32) -> [UInt8] {
        [UInt8(word & 0xFF), UInt8(word >> 8 & 0xFF), UInt8(word >> 16 & 0xFF), UInt8(word >> 24)]
    }

    @Test("arm64 b.cond, cbz/cbnz, tbz/tbnz invert, per Capstone and aarch64 objdump")
    func arm64() throws {
        let disassembler = try Disassembler(architecture: .arm64)
        var original: [UInt8] = [], inverted: [UInt8] = []
        for (word, name, opposite) in Self.arm64Branches {
            let address = UInt64(original.count)
            let insn = try #require(disassembler.decodeOne(Self.littleEndian(word), address: address))
            #expect(insn.mnemonic == name && insn.branch == .conditionalJump, "\(insn.summary)")
            #expect(insn.target == address + 0x40, "\(insn.summary)")
            let flipped = try BranchEdit.invertConditionalJump(insn, architecture: .arm64)
            let again = try #require(disassembler.decodeOne(flipped, address: address))
            #expect(again.mnemonic == opposite && again.target == insn.target, "\(insn.summary) → \(again.summary)")
            // Registers and bit numbers are untouched.
            #expect(again.operands.split(separator: ",").dropLast() == insn.operands.split(separator: ",").dropLast())
            original += insn.bytes
            inverted += flipped
        }
        let before = try Objdump.raw(original, machine: "aarch64")
        let after = try Objdump.raw(inverted, machine: "aarch64")
        try #require(before.count == Self.arm64Branches.count && after.count == before.count)
        for ((_, name, opposite), (b, a)) in zip(Self.arm64Branches, zip(before, after)) {
            // objdump writes b.hs and b.lo under their other names, b.cs and b.cc.
            let aliases = ["b.cs": "b.hs", "b.cc": "b.lo"]
            #expect(aliases[b.mnemonic, default: b.mnemonic] == name && aliases[a.mnemonic, default: a.mnemonic] == opposite,
                    "objdump: \(b.mnemonic) → \(a.mnemonic)")
            #expect(Objdump.branchTarget(b) == b.address + 0x40 && Objdump.branchTarget(a) == Objdump.branchTarget(b))
        }
    }

    @Test("arm64 refuses b.al, b.nv, b, bl, br, ret, nop", arguments: [
        0x5400_020E, 0x5400_020F, 0x1400_0010, 0x9400_0010, 0xD61F_0020, 0xD65F_03C0, 0xD503_201F,
    ] as [UInt32])
    func arm64Refusals(word: UInt32) throws {
        let disassembler = try Disassembler(architecture: .arm64)
        let insn = try #require(disassembler.decodeOne(Self.littleEndian(word), address: 0x4000))
        #expect(throws: DisassemblyError.self, "\(insn.summary)") {
            try BranchEdit.invertConditionalJump(insn, architecture: .arm64)
        }
        do {
            _ = try BranchEdit.invertConditionalJump(insn, architecture: .arm64)
        } catch {
            #expect(error.description.contains("0x4000: \(Hex.bytes(insn.bytes)) \(insn.mnemonic)"))
        }
    }
}
