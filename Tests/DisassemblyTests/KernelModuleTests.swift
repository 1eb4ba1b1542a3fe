import Disassembly
import ELF
import Foundation
import Testing
import TestSupport

/// `decode` over Debian's nfs.ko `.text` against `objdump -d`: the same instructions (address, bytes),
/// the same mnemonic roots, the same kind of branch and the same destination for every direct jump
/// and call; in both syntaxes.
@Suite("nfs.ko against objdump")
struct KernelModuleTests {
    @Test("same instructions, mnemonic roots and direct branch targets as objdump",
          arguments: [AssemblySyntax.att, .intel])
    func againstObjdump(syntax: AssemblySyntax) throws {
        let kernel = try Fixtures.debianKernel()
        let bytes = try Objdump.sectionBytes(kernel.nfsKo, section: ".text")
        let text = try Objdump.output(["-d", "-w", "-z", "-j", ".text"] + (syntax == .intel ? ["-M", "intel"] : []),
                                      of: kernel.nfsKo)
        let theirs = Objdump.lines(text)
        let ours = try Disassembler(architecture: .x86_64, syntax: syntax).decode(bytes, address: 0)
        try #require(theirs.count > 40_000, Comment(rawValue: "objdump listed only \(theirs.count) instructions"))
        let comparison = Comparison(ours: ours, objdump: theirs)
        print("nfs.ko .text (\(syntax)): \(comparison.instructions) instructions, \(comparison.branches) direct "
              + "branches and calls compared")
        #expect(comparison.isClean, Comment(rawValue: comparison.report))
        #expect(comparison.branches > 10_000)
    }

    /// The article's instruction, on 6.1: `nfs_flock+0x2f` is `74 39`, `je` to `nfs_flock+0x6a`, and
    /// its file offset is the section's offset plus the symbol's value plus 0x2f.
    @Test("nfs_flock+0x2f is 74 39 je nfs_flock+0x6a; inverted it is 75 39 jne")
    func nfsFlock() throws {
        let kernel = try Fixtures.debianKernel()
        let symbol = try Readelf.symbol("nfs_flock", in: kernel.nfsKo)
        let text = try Readelf.section(".text", in: kernel.nfsKo)
        #expect(symbol.section == text.index)
        let bytes = try Objdump.sectionBytes(kernel.nfsKo, section: ".text")
        let disassembler = try Disassembler(architecture: .x86_64)
        let function = disassembler.decode(bytes[Int(symbol.value)..<Int(symbol.value + symbol.size)], address: symbol.value)
        let insn = try #require(function.first { $0.address == symbol.value + 0x2f },
                                "no instruction starts at nfs_flock+0x2f")
        #expect(insn.bytes == [0x74, 0x39])
        #expect(insn.mnemonic == "je")
        #expect(insn.branch == .conditionalJump)
        #expect(insn.target == symbol.value + 0x6a)
        // The previous instruction is the article's testb $0x2,0x50(%rbx).
        let previous = try #require(function.last { $0.address < insn.address })
        #expect(previous.address == symbol.value + 0x2b && previous.bytes == [0xF6, 0x43, 0x50, 0x02])

        // The same two bytes in the file, at section offset + symbol value + 0x2f.
        let file = try Data(contentsOf: kernel.nfsKo)
        let fileOffset = Int(text.offset + symbol.value + 0x2f)
        #expect(Array(file[fileOffset..<fileOffset + 2]) == [0x74, 0x39])

        let inverted = try BranchEdit.invertConditionalJump(insn, architecture: .x86_64)
        #expect(inverted == [0x75, 0x39])
        let flipped = try #require(disassembler.decodeOne(inverted, address: insn.address))
        #expect(flipped.mnemonic == "jne" && flipped.target == insn.target)
    }
}

/// 32-bit code: a gcc -m32 object against objdump.
@Suite("i386 against objdump")
struct I386Tests {
    @Test("gcc -m32 object: same instructions, mnemonic roots and branch targets")
    func gccObject() throws {
        let object = try Fixtures.compileFixture("disasm_branches.c", flags: ["-m32", "-O2", "-c"])
        let bytes = try Objdump.sectionBytes(object, section: ".text")
        let theirs = Objdump.lines(try Objdump.output(["-d", "-w", "-z", "-j", ".text"], of: object))
        let ours = try Disassembler(architecture: .i386).decode(bytes, address: 0)
        let comparison = Comparison(ours: ours, objdump: theirs)
        #expect(comparison.isClean, Comment(rawValue: comparison.report))
        #expect(comparison.instructions > 50 && comparison.branches > 5)
    }
}
