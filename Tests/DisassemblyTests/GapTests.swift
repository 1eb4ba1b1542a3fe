import Disassembly
import ELF
import Foundation
import Testing
import TestSupport

/// The instructions Capstone 4 lacks or measures wrongly (found in the Debian kernel's .text), decoded
/// by Suture as objdump decodes them: same length, same mnemonic, same register operands.
@Suite("Capstone 4 gaps")
struct GapTests {
    /// Each from vmlinux .text (BoundaryTests found them), plus neighbours of the same forms.
    static let cases: [[UInt8]] = [
        [0x0F, 0xB9, 0xCC],                         // ud1 %esp,%ecx (BUG/UBSAN trap)
        [0x48, 0x0F, 0xB9, 0x44, 0x24, 0x08],       // ud1 0x8(%rsp),%rax: ModRM with SIB and disp8
        [0x0F, 0x01, 0xEE], [0x0F, 0x01, 0xEF],     // rdpkru, wrpkru
        [0x0F, 0x01, 0xE8],                         // serialize
        [0x0F, 0x01, 0xFA], [0x0F, 0x01, 0xFB],     // monitorx, mwaitx
        [0xF2, 0x0F, 0x01, 0xFF], [0xF3, 0x0F, 0x01, 0xFE],   // pvalidate, rmpadjust
        [0x66, 0x0F, 0xAE, 0xF1],                   // tpause %ecx
        [0xC4, 0xE2, 0x78, 0x49, 0xC0],             // tilerelease
        [0x62, 0x72, 0x4D, 0x28, 0x76, 0xC7],       // vpermi2d %ymm7,%ymm6,%ymm8
        [0x62, 0xF1, 0x65, 0x08, 0x72, 0xC3, 0x10], // vprord $0x10,%xmm3,%xmm3
        [0x62, 0xF1, 0x65, 0x28, 0x72, 0xCB, 0x07], // vprold $0x7,%ymm3,%ymm3
    ]

    @Test("length, mnemonic and operands as objdump shows them")
    func againstObjdump() throws {
        let disassembler = try Disassembler(architecture: .x86_64)
        let stream = Self.cases.flatMap { $0 }
        let ours = disassembler.decode(stream, address: 0)
        let theirs = try Objdump.raw(stream, machine: "i386:x86-64")
        try #require(ours.count == Self.cases.count, "decode found \(ours.map(\.summary))")
        try #require(theirs.count == Self.cases.count)
        for (insn, line) in zip(ours, theirs) {
            #expect(!insn.isInvalid)
            #expect(insn.address == line.address && insn.bytes == line.bytes, "\(insn.summary) vs \(Hex.bytes(line.bytes))")
            #expect(insn.mnemonic == line.mnemonic, "\(insn.summary) vs objdump \(line.mnemonic) \(line.operands)")
            // Register operands as objdump writes them (Capstone puts a space after commas).
            let operands = insn.operands.replacingOccurrences(of: ", ", with: ",")
            if !insn.operands.isEmpty && !insn.operands.contains("(") {
                #expect(operands == line.operands, "\(insn.summary) vs objdump \(line.operands)")
            }
        }
        // The fast path agrees on the lengths.
        let starts = stream.withUnsafeBytes { disassembler.boundaries($0, address: 0) }
        #expect(starts == ours.map(\.address))
    }
}
