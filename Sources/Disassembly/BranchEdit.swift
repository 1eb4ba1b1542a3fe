/// Byte-level edits of branch instructions that keep their length, so they can be written in place.
public enum BranchEdit {
    /// The bytes of `insn` with its condition inverted (je → jne, b.eq → b.ne, cbz → cbnz, tbz → tbnz),
    /// same length, same target. Works from the bytes, not the decoder's text:
    ///
    /// - x86: Jcc short (`70`–`7F`) and near (`0F 80`–`0F 8F`), after any legacy prefixes (branch hints
    ///   `2e`/`3e`, `bnd` `f2`, operand/address size, ...) and, in 64-bit mode, a REX prefix. The
    ///   condition's low opcode bit is its negation. `jcxz`/`jecxz`/`jrcxz` and `loop*` have no inverse
    ///   of the same length and are refused.
    /// - arm64: `b.cond` (bit 0 of the condition; `al` and `nv` have no opposite), `cbz`/`cbnz` and
    ///   `tbz`/`tbnz` (bit 24).
    ///
    /// Anything else is refused with an error that shows the instruction found.
    public static func invertConditionalJump(_ insn: Instruction,
                                             architecture: Architecture) throws(DisassemblyError) -> [UInt8] {
        func refuse(_ reason: String, expected: String) -> DisassemblyError {
            .notInvertible(instruction: insn, architecture: architecture, expected: expected, reason: reason)
        }
        switch architecture {
        case .x86_64, .i386:
            let expected = "a conditional jump (Jcc: 70-7f rel8 or 0f 80-8f rel32)"
            guard !insn.isInvalid else { throw refuse("undecodable bytes", expected: expected) }
            var bytes = insn.bytes
            var i = 0
            while i < bytes.count, isLegacyPrefix(bytes[i]) { i += 1 }
            // REX must sit right before the opcode; in 32-bit mode 40-4f are inc/dec, not prefixes.
            if architecture == .x86_64, i < bytes.count, bytes[i] & 0xF0 == 0x40 { i += 1 }
            guard i < bytes.count else { throw refuse("only prefixes", expected: expected) }
            let opcode = bytes[i]
            if opcode & 0xF0 == 0x70, bytes.count == i + 2 {
                bytes[i] ^= 1
                return bytes
            }
            if opcode == 0x0F, i + 1 < bytes.count, bytes[i + 1] & 0xF0 == 0x80, bytes.count >= i + 4 {
                bytes[i + 1] ^= 1
                return bytes
            }
            if (0xE0...0xE3).contains(opcode) {
                throw refuse("\(insn.mnemonic) (opcode \(hex(opcode))), which tests a counter and has no inverse "
                             + "of the same length", expected: expected)
            }
            throw refuse("\(insn.mnemonic.isEmpty ? "opcode" : insn.mnemonic) (opcode \(hex(opcode)))",
                         expected: expected)
        case .arm64:
            let expected = "a conditional branch (b.cond, cbz/cbnz or tbz/tbnz)"
            guard insn.bytes.count == 4, !insn.isInvalid else {
                throw refuse(insn.isInvalid ? "an undecodable word" : "\(insn.bytes.count) bytes, not one 4-byte word",
                             expected: expected)
            }
            let word = UInt32(insn.bytes[0]) | UInt32(insn.bytes[1]) << 8 | UInt32(insn.bytes[2]) << 16
                | UInt32(insn.bytes[3]) << 24
            let inverted: UInt32
            if word & 0xFF00_0010 == 0x5400_0000 {          // b.cond: 0101 0100 imm19 0 cond
                let cond = word & 0xF
                guard cond < 0xE else {
                    throw refuse("b.\(cond == 0xE ? "al" : "nv"), which is always taken and has no opposite",
                                 expected: expected)
                }
                inverted = word ^ 1
            } else if word & 0x7E00_0000 == 0x3400_0000 {   // cbz/cbnz: sf 011010 op imm19 Rt
                inverted = word ^ (1 << 24)
            } else if word & 0x7E00_0000 == 0x3600_0000 {   // tbz/tbnz: b5 011011 op b40 imm14 Rt
                inverted = word ^ (1 << 24)
            } else {
                throw refuse(insn.mnemonic.isEmpty ? "another instruction" : insn.mnemonic, expected: expected)
            }
            return [UInt8(truncatingIfNeeded: inverted), UInt8(truncatingIfNeeded: inverted >> 8),
                    UInt8(truncatingIfNeeded: inverted >> 16), UInt8(truncatingIfNeeded: inverted >> 24)]
        }
    }

    /// Segment overrides (also the branch hints 2e/3e), operand and address size, lock, rep/repne (f2 is
    /// also `bnd`).
    private static func isLegacyPrefix(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3: return true
        default: return false
        }
    }

    private static func hex(_ byte: UInt8) -> String {
        byte < 0x10 ? "0" + String(byte, radix: 16) : String(byte, radix: 16)
    }
}
