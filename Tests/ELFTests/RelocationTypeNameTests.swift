import ELF
import Foundation
import Testing
import TestSupport

/// Relocation type names for every type number readelf knows, per architecture: an assembler builds
/// an object with many relocations, the test rewrites their type numbers to 0, 1, 2, ... and
/// compares readelf's name for each with `RelocationType.name` and with what `ELFFile` reports.
@Suite struct RelocationTypeNameTests {
    struct Architecture: Sendable, CustomTestStringConvertible {
        let machine: UInt16
        let assembler: [String]       // command and flags; the source file and "-o out" follow
        let directive: String         // one data relocation
        let entries: Int
        let is64: Bool
        let minimumKnown: Int
        var testDescription: String { assembler[0] + " " + directive }
    }

    static let architectures = [
        // x86-64: types 0...51 and 250/251 (GNU_VTINHERIT/VTENTRY).
        Architecture(machine: 62, assembler: ["as", "--64"], directive: ".quad target", entries: 260, is64: true, minimumKnown: 44),
        // i386: ELF32 REL, r_info keeps 8 bits of type.
        Architecture(machine: 3, assembler: ["as", "--32"], directive: ".long target", entries: 256, is64: false, minimumKnown: 42),
        // AArch64 (a cross assembler: LLVM's integrated one) : 0, 256...313, 512...573, 1024...1032.
        Architecture(machine: 183, assembler: ["llvm-mc", "-triple=aarch64-linux-gnu", "-filetype=obj"],
                     directive: ".xword target", entries: 1100, is64: true, minimumKnown: 150),
    ]

    @Test(arguments: architectures)
    func namesMatchReadelf(_ arch: Architecture) throws {
        let folder = try Fixtures.temporaryFolder("suture-elf-reloc-names")
        let source = folder.appendingPathComponent("many.s")
        try ".data\n.rept \(arch.entries)\n\(arch.directive)\n.endr\n".write(to: source, atomically: true, encoding: .utf8)
        let object = folder.appendingPathComponent("many.o")
        try Fixtures.check(arch.assembler[0], Array(arch.assembler.dropFirst()) + ["-o", object.path, source.path])

        // Locate the relocation table with readelf, then rewrite entry i's type to i.
        let table = try #require(try Readelf(object.path).sections().first { $0.name == ".rela.data" || $0.name == ".rel.data" })
        var bytes = [UInt8](try Data(contentsOf: object))
        let entrySize = Int(table.entrySize)
        #expect(Int(table.size) / entrySize == arch.entries)
        for i in 0..<arch.entries {
            let info = Int(table.offset) + i * entrySize + (arch.is64 ? 8 : 4)
            if arch.is64 {
                for k in 0..<4 { bytes[info + k] = UInt8(truncatingIfNeeded: i >> (8 * k)) }   // low word of r_info
            } else {
                bytes[info] = UInt8(truncatingIfNeeded: i)                                     // low byte of r_info
            }
        }
        let patched = folder.appendingPathComponent("patched.o")
        try Data(bytes).write(to: patched)

        let rows = try #require(try Readelf(patched.path).relocationTables().first).rows
        #expect(rows.count == arch.entries)
        let elf = try ELFFile(path: patched.path)
        let section = try #require(elf.sections.first { $0.offset == table.offset })
        let relocations = try elf.relocations(in: section)
        var known = 0
        for (row, relocation) in zip(rows, relocations) {
            let type = UInt32(truncatingIfNeeded: arch.is64 ? row.info : row.info & 0xff)
            #expect(relocation.type == type)
            guard !row.type.hasPrefix("unrecognized") else { continue }
            known += 1
            #expect(RelocationType.name(type, machine: Machine(rawValue: arch.machine)) == row.type, "type \(type)")
            #expect(relocation.typeName == row.type, "type \(type)")
        }
        #expect(known >= arch.minimumKnown, "readelf named only \(known) types")
    }

    /// Real AArch64 code (calls, ADRP/ADD pairs, GOT loads, TLS, data words) from LLVM's cross
    /// assembler, compared in full with readelf.
    @Test func aarch64ObjectMatchesReadelf() throws {
        let folder = try Fixtures.temporaryFolder("suture-elf-aarch64")
        let source = folder.appendingPathComponent("code.s")
        try """
            .text
            .globl entry
            .type entry, %function
            entry:
                bl external_function
                b external_function
                adrp x0, table
                add x0, x0, :lo12:table
                adrp x1, :got:external_data
                ldr x1, [x1, :got_lo12:external_data]
                ldr x2, [x0, :lo12:table]
                cbz x0, entry
                movz x3, #:abs_g1:table
                movk x3, #:abs_g0_nc:table
                mrs x4, tpidr_el0
                add x4, x4, :tprel_hi12:tls_value
                add x4, x4, :tprel_lo12_nc:tls_value
                ret
            .size entry, .-entry
            .data
            table:
                .xword entry
                .word external_data
                .hword 0
            .section .tbss,"awT",@nobits
            tls_value: .zero 8
            """.write(to: source, atomically: true, encoding: .utf8)
        let object = folder.appendingPathComponent("code.o")
        try Fixtures.check("llvm-mc", ["-triple=aarch64-linux-gnu", "-filetype=obj", "-o", object.path, source.path])
        let elf = try ELFFile(path: object.path)
        #expect(elf.header.machine == .aarch64)
        let counts = try expectMatchesReadelf(object.path, file: elf)
        #expect(counts["relocations", default: 0] >= 14)
        let text = try #require(elf.section(named: ".text"))
        let names = Set(try elf.relocations(applyingTo: text).map(\.typeName))
        #expect(names.isSuperset(of: ["R_AARCH64_CALL26", "R_AARCH64_JUMP26", "R_AARCH64_ADR_PREL_PG_HI21",
                                      "R_AARCH64_ADD_ABS_LO12_NC", "R_AARCH64_ADR_GOT_PAGE", "R_AARCH64_LD64_GOT_LO12_NC"]))
    }
}
