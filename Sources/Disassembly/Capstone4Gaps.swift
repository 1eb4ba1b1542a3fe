/// x86 instructions that binutils 2.40 decodes and Capstone 4.0.2 does not, or decodes with the wrong
/// length. Found by sweeping the Debian 6.1 kernel's whole `.text` against objdump (BoundaryTests).
///
/// A wrong length is not cosmetic here: the patch engine checks that a hunk starts and ends on
/// instruction boundaries, and `0f 01 e8` (serialize, in sync_core) read as `(bad)` + `add %ebp,%eax`
/// would invent a boundary one byte into the instruction.
enum Capstone4Gaps {
    struct Decoded {
        var length: Int
        var mnemonic: String
        var operands: String
    }

    /// Decodes with Capstone itself (used on rewritten bytes); returns length, mnemonic, operands.
    typealias Retry = (_ bytes: [UInt8]) -> Decoded?

    /// Where the opcode starts: after legacy prefixes and, in 64-bit mode, one REX prefix. Also the
    /// last of 66/f2/f3 seen, which selects among opcodes that share a ModRM byte.
    private static func opcodeStart(_ bytes: UnsafeBufferPointer<UInt8>, is64: Bool) -> (index: Int, mandatory: UInt8?, rex: UInt8) {
        var i = 0
        var mandatory: UInt8?
        while i < bytes.count, i < 14 {
            switch bytes[i] {
            case 0x66, 0xF2, 0xF3: mandatory = bytes[i]
            case 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x67, 0xF0: break
            default:
                if is64, bytes[i] & 0xF0 == 0x40 { return (i + 1, mandatory, bytes[i]) }
                return (i, mandatory, 0)
            }
            i += 1
        }
        return (i, mandatory, 0)
    }

    /// Capstone 4 reads `0f b9` as `ud2b` without a ModRM byte; it is UD1 r32, r/m32 and has one
    /// (Intel SDM since 2016; binutils, and the kernel's BUG()/UBSAN traps rely on it: `0f b9 cc`).
    /// The operands are laid out like IMUL r32, r/m32 (`0f af`), so Capstone decodes that in its
    /// place for the length and the operand text.
    static func ud1(_ bytes: UnsafeBufferPointer<UInt8>, is64: Bool, retry: Retry) -> Decoded? {
        let (i, _, _) = opcodeStart(bytes, is64: is64)
        guard i + 2 < bytes.count, bytes[i] == 0x0F, bytes[i + 1] == 0xB9 else { return nil }
        var substitute = Array(bytes.prefix(i + 16 < bytes.count ? i + 16 : bytes.count))
        substitute[i + 1] = 0xAF
        guard let imul = retry(substitute) else { return nil }
        return Decoded(length: imul.length, mnemonic: "ud1", operands: imul.operands)
    }

    /// Called where Capstone found no instruction.
    static func decodeMissing(_ bytes: UnsafeBufferPointer<UInt8>, is64: Bool, syntax: AssemblySyntax,
                              retry: Retry) -> Decoded? {
        guard !bytes.isEmpty else { return nil }
        if bytes[0] == 0x62, is64 { return evex(bytes, syntax: syntax, retry: retry) }
        let (i, mandatory, rex) = opcodeStart(bytes, is64: is64)
        guard i + 2 < bytes.count, bytes[i] == 0x0F else {
            return exact(bytes)
        }
        let modrm = bytes[i + 2]
        guard modrm >= 0xC0 else { return nil }
        switch bytes[i + 1] {
        case 0x01:
            // Group 7 with a register ModRM: fixed 3-byte opcodes with implicit operands.
            let name: String? = switch mandatory {
            case nil: group7[modrm]
            case 0xF3: group7F3[modrm]
            case 0xF2: group7F2[modrm]
            default: nil
            }
            return name.map { Decoded(length: i + 3, mnemonic: $0, operands: "") }
        case 0xAE where modrm & 0x38 == 0x30:
            // 0f ae /6 with a register: tpause (66), umonitor (f3), umwait (f2).
            let name: String? = switch mandatory {
            case 0x66: "tpause"
            case 0xF3: "umonitor"
            case 0xF2: "umwait"
            default: nil
            }
            guard let name else { return nil }
            let number = Int(modrm & 7) | (rex & 1 == 1 ? 8 : 0)
            let register = name == "umonitor" && is64 ? registers64[number] : registers32[number]
            return Decoded(length: i + 3, mnemonic: name, operands: syntax == .att ? "%" + register : register)
        default:
            return nil
        }
    }

    /// AVX-512VL forms (128/256-bit) of some EVEX instructions are missing from Capstone 4 while the
    /// 512-bit form is there (`62 f1 65 08 72 c3 10` vprord $0x10,%xmm3,%xmm3). The vector length
    /// (EVEX.L'L, bits 6:5 of the fourth byte) does not change the encoding's length, so Capstone
    /// decodes the 512-bit form for the length and the mnemonic; register operands are renamed to the
    /// real width. A disp8 memory operand is scaled by the vector length, so its text would be wrong:
    /// such operands are left out.
    private static func evex(_ bytes: UnsafeBufferPointer<UInt8>, syntax: AssemblySyntax, retry: Retry) -> Decoded? {
        guard bytes.count >= 6 else { return nil }
        let vectorLength = (bytes[3] >> 5) & 3
        guard vectorLength < 2 else { return nil }
        let modrm = bytes[5]
        let name = vectorLength == 0 ? "xmm" : "ymm"
        var wide = Array(bytes.prefix(15))
        wide[3] = (wide[3] & 0x9F) | 0x40
        if let decoded = retry(wide) {
            let operands = modrm >> 6 == 1 ? ""
                : String(decoded.operands.split(separator: "zmm", omittingEmptySubsequences: false).joined(separator: name))
            return Decoded(length: decoded.length, mnemonic: decoded.mnemonic, operands: operands)
        }
        return evexRotate(bytes, register: name, syntax: syntax)
    }

    /// VPRORD/VPRORQ/VPROLD/VPROLQ (EVEX.66.0F 72 /0 and /1 ib) are missing from Capstone 4 at every
    /// vector length (the kernel's BLAKE2s and ChaCha code use `vprord $0x10,%xmm3,%xmm3`).
    private static func evexRotate(_ bytes: UnsafeBufferPointer<UInt8>, register: String,
                                   syntax: AssemblySyntax) -> Decoded? {
        let p0 = bytes[1], p1 = bytes[2], p2 = bytes[3]
        // Map 0F (mm = 01), prefix 66 (pp = 01), bit 2 of P1 always 1, opcode 72.
        guard p0 & 0x03 == 1, p1 & 0x07 == 0x05, bytes[4] == 0x72 else { return nil }
        let modrm = bytes[5]
        let operation = (modrm >> 3) & 7
        guard operation <= 1, let rmLength = modrmLength(bytes, at: 5) else { return nil }
        let length = 5 + rmLength + 1
        guard length <= bytes.count else { return nil }
        let mnemonic = (operation == 0 ? "vpror" : "vprol") + (p1 & 0x80 != 0 ? "q" : "d")
        guard modrm >> 6 == 3 else { return Decoded(length: length, mnemonic: mnemonic, operands: "") }
        // Register numbers: ModRM.rm extended by EVEX.B and X (inverted), destination in vvvv and V'.
        let source = Int(modrm & 7) | (p0 & 0x20 == 0 ? 8 : 0) | (p0 & 0x40 == 0 ? 16 : 0)
        let destination = Int((~p1 >> 3) & 0xF) | (p2 & 0x08 == 0 ? 16 : 0)
        let immediate = bytes[length - 1]
        let mask = Int(p2 & 7)
        let maskText = mask == 0 ? "" : "{%k\(mask)}" + (p2 & 0x80 != 0 ? "{z}" : "")
        let hex = "0x" + String(immediate, radix: 16)
        let operands = syntax == .att
            ? "$\(hex),%\(register)\(source),%\(register)\(destination)\(maskText)"
            : "\(register)\(destination)\(maskText.replacingPercent()),\(register)\(source),\(hex)"
        return Decoded(length: length, mnemonic: mnemonic, operands: operands)
    }

    /// Bytes taken by a ModRM byte at `index` and what follows it (SIB, displacement), 32/64-bit
    /// addressing.
    private static func modrmLength(_ bytes: UnsafeBufferPointer<UInt8>, at index: Int) -> Int? {
        guard index < bytes.count else { return nil }
        let modrm = bytes[index]
        let mod = modrm >> 6, rm = modrm & 7
        if mod == 3 { return 1 }
        var length = 1
        if rm == 4 {
            guard index + 1 < bytes.count else { return nil }
            length += 1
            if mod == 0, bytes[index + 1] & 7 == 5 { length += 4 }
        } else if mod == 0, rm == 5 {
            length += 4
        }
        if mod == 1 { length += 1 }
        if mod == 2 { length += 4 }
        return length
    }

    /// Whole byte sequences: instructions without operands in encodings Capstone 4 lacks.
    private static func exact(_ bytes: UnsafeBufferPointer<UInt8>) -> Decoded? {
        for (sequence, name) in sequences where bytes.starts(with: sequence) {
            return Decoded(length: sequence.count, mnemonic: name, operands: "")
        }
        return nil
    }

    private static let sequences: [([UInt8], String)] = [
        ([0xC4, 0xE2, 0x78, 0x49, 0xC0], "tilerelease"),   // AMX, VEX.128.NP.0F38.W0 49 C0
    ]

    /// `0f 01` + register ModRM, no mandatory prefix (binutils' names; AMD and Intel extensions).
    private static let group7: [UInt8: String] = [
        0xC0: "enclv", 0xC1: "vmcall", 0xC2: "vmlaunch", 0xC3: "vmresume", 0xC4: "vmxoff", 0xC5: "pconfig",
        0xC8: "monitor", 0xC9: "mwait", 0xCA: "clac", 0xCB: "stac", 0xCF: "encls",
        0xD0: "xgetbv", 0xD1: "xsetbv", 0xD4: "vmfunc", 0xD5: "xend", 0xD6: "xtest", 0xD7: "enclu",
        0xD8: "vmrun", 0xD9: "vmmcall", 0xDA: "vmload", 0xDB: "vmsave", 0xDC: "stgi", 0xDD: "clgi",
        0xDE: "skinit", 0xDF: "invlpga", 0xE8: "serialize", 0xEE: "rdpkru", 0xEF: "wrpkru",
        0xF8: "swapgs", 0xF9: "rdtscp", 0xFA: "monitorx", 0xFB: "mwaitx", 0xFC: "clzero", 0xFD: "rdpru",
        0xFE: "invlpgb", 0xFF: "tlbsync",
    ]
    private static let group7F3: [UInt8: String] = [
        0xE8: "setssbsy", 0xEA: "saveprevssp", 0xFE: "rmpadjust", 0xFF: "psmash",
    ]
    private static let group7F2: [UInt8: String] = [
        0xE8: "xsusldtrk", 0xE9: "xresldtrk", 0xFE: "rmpupdate", 0xFF: "pvalidate",
    ]

    private static let registers32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi",
                                      "r8d", "r9d", "r10d", "r11d", "r12d", "r13d", "r14d", "r15d"]
    private static let registers64 = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                      "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
}

private extension String {
    /// `{%k1}` → `{k1}` for Intel syntax.
    func replacingPercent() -> String { String(filter { $0 != "%" }) }
}
