import ELF
import Foundation
import Testing
import TestSupport

/// More than 65280 sections: e_shnum/e_shstrndx move into section 0 and symbol section indexes go
/// through SHT_SYMTAB_SHNDX (SHN_XINDEX). The assembler makes such an object; readelf is the oracle.
@Suite struct ExtendedNumberingTests {
    @Test(.timeLimit(.minutes(2)))
    func objectWithSixtySixThousandSections() throws {
        let folder = try Fixtures.temporaryFolder("suture-elf-xindex")
        let source = folder.appendingPathComponent("many.s")
        var text = ""
        text.reserveCapacity(66_000 * 60)
        for i in 0..<66_000 {
            text += ".section .text.f\(i),\"ax\",@progbits\n.globl f\(i)\nf\(i): ret\n"
        }
        text += ".data\n.quad f65999\n.quad f7\n"
        try text.write(to: source, atomically: true, encoding: .utf8)
        let object = folder.appendingPathComponent("many.o")
        try Fixtures.check("as", ["-o", object.path, source.path])

        let elf = try ELFFile(path: object.path)
        #expect(elf.sections.count > 66_000)
        #expect(elf.header.sectionNameTableIndex > 0xff00)
        #expect(elf.sections.contains { $0.type == ELFConstants.SHT_SYMTAB_SHNDX })
        let counts = try expectMatchesReadelf(object.path, file: elf)
        #expect(counts["symbols", default: 0] > 66_000)

        let last = try #require(try elf.symbols().first { $0.name == "f65999" })
        #expect(last.sectionIndex > 0xff00 && elf.sections[Int(last.sectionIndex)].name == ".text.f65999")
        let data = try #require(elf.section(named: ".data"))
        let relocations = try elf.relocations(applyingTo: data)
        #expect(relocations.map(\.symbolName) == ["f65999", "f7"])
        #expect(relocations.first?.symbolSectionIndex == last.sectionIndex)
    }
}
