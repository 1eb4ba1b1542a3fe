/// Instruction lengths for the common x86-64 general-purpose instructions, without Capstone.
///
/// Capstone 4 formats every instruction's text even with detail off (its printer always runs), which
/// caps a Capstone-only sweep at about 3× objdump. Most kernel code is a small set of encodings (mov,
/// lea, ALU ops, jcc, call, push/pop, nop forms, endbr64), whose length follows from the opcode, the
/// ModRM/SIB bytes and the prefixes alone. This decoder measures those and answers nil for everything
/// else (VEX/EVEX, x87, SSE, 0f 38/3a, lock, rep/repne outside string ops, opcodes whose validity
/// depends on the ModRM reg field, invalid opcodes, ...), which then goes to Capstone. It is checked
/// against objdump on the whole kernel `.text` and against Capstone on random and mutated code.
enum X86LengthDecoder {
    // Opcode classes.
    private static let deferred: UInt8 = 0      // let Capstone decide
    private static let plain: UInt8 = 1         // opcode only
    private static let imm8: UInt8 = 2
    private static let immZ: UInt8 = 3          // 16 bits with 66, else 32 (REX.W keeps 32)
    private static let imm16: UInt8 = 4
    private static let modrm: UInt8 = 5
    private static let modrmImm8: UInt8 = 6
    private static let modrmImmZ: UInt8 = 7
    private static let immV: UInt8 = 8          // mov r, imm: 64 bits with REX.W, 16 with 66, else 32
    private static let enter: UInt8 = 9         // imm16 + imm8
    private static let rel32: UInt8 = 10        // call/jmp/jcc rel32 (with 66: deferred)
    private static let escape: UInt8 = 11       // 0f
    private static let groupF6: UInt8 = 12      // test Eb, imm8 (/0) or unary (/2-/7)
    private static let groupF7: UInt8 = 13      // test Ev, immZ (/0) or unary (/2-/7)
    private static let regZeroImm8: UInt8 = 14  // c6: only /0 is mov
    private static let regZeroImmZ: UInt8 = 15  // c7: only /0 is mov
    private static let regZero: UInt8 = 16      // 8f: /0 pop (else XOP)
    private static let incDec: UInt8 = 17       // fe: /0 /1
    private static let groupFF: UInt8 = 18      // ff: /0 /1 /2 /4 /6
    private static let memoryOnly: UInt8 = 19   // lea: a register operand is invalid
    private static let shiftImm8: UInt8 = 20    // c0 c1: /6 is an undocumented alias
    private static let shift: UInt8 = 21        // d0-d3: same
    private static let setcc: UInt8 = 22        // 0f 90-9f: /0 only (others are accepted by some decoders)
    private static let group8: UInt8 = 23       // 0f ba: bt/bts/btr/btc imm8 are /4-/7
    private static let string: UInt8 = 24       // a4-a7, aa-af, 6c-6f, 90: rep/repne allowed

    private static let oneByte: [UInt8] = {
        var t = [UInt8](repeating: deferred, count: 256)
        // ALU blocks 00-3d: Eb,Gb / Ev,Gv / Gb,Eb / Gv,Ev / AL,imm8 / eAX,immZ.
        for base in stride(from: 0x00, through: 0x38, by: 8) {
            t[base] = modrm; t[base + 1] = modrm; t[base + 2] = modrm; t[base + 3] = modrm
            t[base + 4] = imm8; t[base + 5] = immZ
        }
        t[0x0F] = escape
        for op in 0x50...0x5F { t[op] = plain }                    // push/pop r64
        t[0x63] = modrm                                          // movslq
        t[0x68] = immZ; t[0x69] = modrmImmZ; t[0x6A] = imm8; t[0x6B] = modrmImm8
        for op in 0x6C...0x6F { t[op] = string }
        for op in 0x70...0x7F { t[op] = imm8 }                     // jcc rel8
        t[0x80] = modrmImm8; t[0x81] = modrmImmZ; t[0x83] = modrmImm8
        for op in 0x84...0x8B { t[op] = modrm }                    // test, xchg, mov
        t[0x8D] = memoryOnly                                     // lea
        t[0x8F] = regZero                                        // pop Ev
        t[0x90] = string                                         // nop, f3 90 pause
        for op in 0x91...0x99 { t[op] = plain }                    // xchg, cbw/cwd families
        for op in 0x9C...0x9F { t[op] = plain }                    // pushf/popf/sahf/lahf
        for op in [0xA4, 0xA5, 0xA6, 0xA7, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF] { t[op] = string }
        t[0xA8] = imm8; t[0xA9] = immZ
        for op in 0xB0...0xB7 { t[op] = imm8 }
        for op in 0xB8...0xBF { t[op] = immV }
        t[0xC0] = shiftImm8; t[0xC1] = shiftImm8
        t[0xC2] = imm16; t[0xC3] = plain
        t[0xC6] = regZeroImm8; t[0xC7] = regZeroImmZ
        t[0xC8] = enter; t[0xC9] = plain; t[0xCA] = imm16; t[0xCB] = plain
        t[0xCC] = plain; t[0xCD] = imm8; t[0xCF] = plain
        for op in 0xD0...0xD3 { t[op] = shift }
        t[0xD7] = plain
        for op in 0xE0...0xE7 { t[op] = imm8 }                     // loop, jcxz, in/out imm8
        t[0xE8] = rel32; t[0xE9] = rel32; t[0xEB] = imm8
        for op in 0xEC...0xEF { t[op] = plain }
        t[0xF4] = plain; t[0xF5] = plain
        t[0xF6] = groupF6; t[0xF7] = groupF7
        for op in 0xF8...0xFD { t[op] = plain }
        t[0xFE] = incDec; t[0xFF] = groupFF
        return t
    }()

    private static let twoByte: [UInt8] = {
        var t = [UInt8](repeating: deferred, count: 256)
        for op in [0x05, 0x06, 0x07, 0x08, 0x09, 0x0B, 0x30, 0x31, 0x32, 0x33, 0xA2] { t[op] = plain }
        t[0x1F] = modrm                                          // nopl/nopw Ev (all /r are hint nops)
        for op in 0x40...0x4F { t[op] = modrm }                    // cmovcc
        for op in 0x80...0x8F { t[op] = rel32 }                    // jcc rel32
        for op in 0x90...0x9F { t[op] = setcc }
        t[0xA0] = plain; t[0xA1] = plain; t[0xA8] = plain; t[0xA9] = plain   // push/pop fs/gs
        for op in [0xA3, 0xA5, 0xAB, 0xAD, 0xAF, 0xB0, 0xB1, 0xB3, 0xB6, 0xB7, 0xBB, 0xBE, 0xBF, 0xC0, 0xC1] {
            t[op] = modrm
        }
        t[0xA4] = modrmImm8; t[0xAC] = modrmImm8                  // shld/shrd imm8
        t[0xBA] = group8
        for op in 0xC8...0xCF { t[op] = plain }                    // bswap
        return t
    }()

    /// The length of the instruction at `p` (with `count` bytes available), or nil to ask Capstone.
    @inline(__always)
    static func length(_ p: UnsafePointer<UInt8>, _ count: Int) -> Int? {
        var i = 0
        var operandSize16 = false
        var addressSize32 = false
        var rep = false
        // Legacy prefixes. lock goes to Capstone (it rejects lock on instructions that cannot take it).
        prefixes: while i < count {
            switch p[i] {
            case 0x66: operandSize16 = true
            case 0xF2, 0xF3: rep = true
            case 0x67: addressSize32 = true
            case 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65: break
            default: break prefixes
            }
            i += 1
            if i > 14 { return nil }
        }
        guard i < count else { return nil }
        var rexW = false
        let hasREX = p[i] & 0xF0 == 0x40
        if hasREX {
            rexW = p[i] & 0x08 != 0
            i += 1
            // A REX that is not right before the opcode is ignored by the CPU and shown apart by objdump.
            guard i < count, p[i] & 0xF0 != 0x40 else { return nil }
        }
        guard i < count else { return nil }
        let opcode = p[i]
        i += 1
        var kind = oneByte[Int(opcode)]
        if kind == escape {
            guard i < count else { return nil }
            let second = p[i]
            i += 1
            if second == 0x1E || second == 0x1F {
                // Hint nops (0f 1f /r nopl, f3 0f 1e fa endbr64). Capstone 4 rejects their register
                // forms under prefixes, and other 0f 1e forms: only the memory forms and endbr64 here.
                guard i < count else { return nil }
                let isEndbr = rep && second == 0x1E && p[i] == 0xFA && !hasREX && !operandSize16
                    && p[i - 3] == 0xF3
                guard isEndbr || (second == 0x1F && !rep && p[i] < 0xC0) else { return nil }
                kind = modrm
            } else {
                if rep { return nil }
                kind = twoByte[Int(second)]
            }
        } else if rep && kind != string {
            return nil
        }
        switch kind {
        case deferred, escape: return nil
        case plain, string: return check(i, count)
        case imm8: return check(i + 1, count)
        // Capstone 4 gets `66 48 c2 iw` and `67 e8 rel32` wrong (it reads 16-bit forms): leave them to it,
        // so the fast path never disagrees with `decode`.
        case imm16: return operandSize16 || hasREX ? nil : check(i + 2, count)
        case immZ: return check(i + (operandSize16 && !rexW ? 2 : 4), count)
        case immV: return check(i + (rexW ? 8 : operandSize16 ? 2 : 4), count)
        case enter: return check(i + 3, count)
        case rel32: return operandSize16 || addressSize32 ? nil : check(i + 4, count)
        default: break
        }
        // Everything below has a ModRM byte.
        guard i < count else { return nil }
        let m = p[i]
        let reg = (m >> 3) & 7
        let isRegister = m >= 0xC0
        var immediate = 0
        switch kind {
        case modrm: break
        case modrmImm8: immediate = 1
        case modrmImmZ: immediate = operandSize16 && !rexW ? 2 : 4
        case groupF6:
            if reg == 1 { return nil }
            immediate = reg == 0 ? 1 : 0
        case groupF7:
            if reg == 1 { return nil }
            immediate = reg == 0 ? (operandSize16 && !rexW ? 2 : 4) : 0
        case regZeroImm8:
            guard reg == 0 else { return nil }
            immediate = 1
        case regZeroImmZ:
            guard reg == 0 else { return nil }
            immediate = operandSize16 && !rexW ? 2 : 4
        case regZero, setcc: guard reg == 0 else { return nil }
        case incDec: guard reg <= 1 else { return nil }
        case groupFF: guard reg != 3, reg != 5, reg != 7 else { return nil }
        case memoryOnly: guard !isRegister else { return nil }
        case shiftImm8:
            guard reg != 6 else { return nil }
            immediate = 1
        case shift: guard reg != 6 else { return nil }
        case group8:
            guard reg >= 4 else { return nil }
            immediate = 1
        default: return nil
        }
        i += 1
        if !isRegister {
            let mod = m >> 6, rm = m & 7
            if rm == 4 {
                guard i < count else { return nil }
                if mod == 0, p[i] & 7 == 5 { i += 4 }
                i += 1
            } else if mod == 0, rm == 5 {
                i += 4
            }
            if mod == 1 { i += 1 } else if mod == 2 { i += 4 }
        }
        return check(i + immediate, count)
    }

    /// x86 instructions are at most 15 bytes; a longer or truncated one is Capstone's to reject.
    @inline(__always)
    private static func check(_ length: Int, _ count: Int) -> Int? {
        length <= count && length <= 15 ? length : nil
    }
}
