import ELF
import Foundation
import Testing
import TestSupport

/// Bad input never crashes nor hangs: every call either succeeds or throws an `ELFError` that names
/// the file. Hundreds of deterministic truncations and byte flips of a gcc object and of nfs.ko, then
/// targeted corruptions whose messages must name the structure and the offset.
@Suite struct MalformedInputTests {
    /// Runs every reader entry point; returns the errors seen (all must be `ELFError`).
    @discardableResult
    static func exercise(_ bytes: [UInt8], name: String) -> [ELFError] {
        var errors: [ELFError] = []
        func attempt<T>(_ body: () throws -> T) {
            do {
                _ = try body()
            } catch let error as ELFError {
                errors.append(error)
            } catch {
                Issue.record("\(name): a call threw \(type(of: error)), not ELFError: \(error)")
            }
        }
        let elf: ELFFile
        do throws(ELFError) { elf = try ELFFile(bytes: bytes, name: name) } catch { return [error] }
        for section in elf.sections {
            attempt { try elf.data(of: section) }
            attempt { try elf.relocations(applyingTo: section) }
            if section.isRelocationTable { attempt { try elf.relocations(in: section) } }
            if section.type == ELFConstants.SHT_SYMTAB || section.type == ELFConstants.SHT_DYNSYM {
                attempt { try elf.symbols(in: section) }
            }
            if section.isAllocated { attempt { try elf.bytes(atAddress: section.address, count: Int(min(section.size, 16))) } }
        }
        attempt { try elf.symbols() }
        attempt { try elf.dynamicSymbols() }
        attempt { try elf.notes() }
        attempt { try elf.buildID() }
        for segment in elf.segments {
            _ = elf.fileOffset(ofAddress: segment.virtualAddress)
            attempt { try elf.bytes(atAddress: segment.virtualAddress, count: Int(min(segment.fileSize, 16))) }
        }
        attempt { try elf.bytes(atAddress: .max - 3, count: 8) }
        return errors
    }

    /// Truncations at random lengths, then single and multi-byte flips, biased to `hotRanges`
    /// (headers and tables) where structure lives.
    static func fuzz(_ original: [UInt8], name: String, seed: UInt64, truncations: Int, flips: Int,
                     hotRanges: [Range<Int>]) -> (runs: Int, errors: Int) {
        var random = SplitMix64(seed: seed)
        var runs = 0, errorCount = 0
        func check(_ bytes: [UInt8]) {
            let errors = exercise(bytes, name: name)
            runs += 1
            errorCount += errors.isEmpty ? 0 : 1
            for error in errors {
                #expect(error.file == name)
                #expect(error.description.hasPrefix(name + ": "))
            }
        }
        for _ in 0..<truncations {
            check(Array(original.prefix(random.below(original.count))))
        }
        let interesting: [UInt8] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe, 0x40]
        for round in 0..<flips {
            var bytes = original
            for _ in 0..<(1 + random.below(4)) {
                let range = round % 4 == 3 ? 0..<bytes.count : hotRanges[random.below(hotRanges.count)]
                let position = range.lowerBound + random.below(range.count)
                guard position < bytes.count else { continue }
                bytes[position] = random.below(2) == 0 ? interesting[random.below(interesting.count)]
                                                       : UInt8(truncatingIfNeeded: random.next())
            }
            check(bytes)
        }
        return (runs, errorCount)
    }

    /// Byte ranges of the ELF header, section header table and the given sections' contents.
    static func hotRanges(of elf: ELFFile, sections names: [String]) -> [Range<Int>] {
        let size = elf.contents.count
        let shoff = Int(elf.header.sectionHeaderOffset)
        var ranges = [0..<64, shoff..<min(size, shoff + elf.sections.count * 64)]
        for name in names {
            if let s = elf.section(named: name), s.size > 0 { ranges.append(Int(s.offset)..<Int(s.offset + s.size)) }
        }
        return ranges
    }

    @Test(.timeLimit(.minutes(3)))
    func gccObjectSurvivesTruncationsAndFlips() throws {
        let object = try Fixtures.compileFixture("elf_sample.c", flags: ["-O2", "-c", "-Wl,--build-id"])
        let original = [UInt8](try Data(contentsOf: object))
        let elf = try ELFFile(bytes: original, name: "elf_sample.o")
        let hot = Self.hotRanges(of: elf, sections: [".symtab", ".strtab", ".rela.text", ".shstrtab", ".note.gnu.property"])
        let (runs, errors) = Self.fuzz(original, name: "elf_sample.o", seed: 0x5EED_0001, truncations: 200, flips: 400,
                                       hotRanges: hot)
        #expect(runs == 600)
        #expect(errors > 200)          // the corruptions were noticed, not just survived
    }

    @Test(.timeLimit(.minutes(5)))
    func nfsModuleSurvivesTruncationsAndFlips() throws {
        let kernel = try Fixtures.debianKernel()
        let original = [UInt8](try Data(contentsOf: kernel.nfsKo))
        let elf = try ELFFile(bytes: original, name: "nfs.ko")
        // The first 64 KiB (headers, notes, start of .text) plus the section header table and the
        // tables the symbol and relocation readers walk.
        let hot = [0..<65_536] + Self.hotRanges(of: elf, sections: [".symtab", ".strtab", ".rela.text", ".rela__ksymtab_gpl"])
        let (runs, errors) = Self.fuzz(original, name: "nfs.ko", seed: 0x5EED_0002, truncations: 100, flips: 200,
                                       hotRanges: hot)
        #expect(runs == 300)
        #expect(errors > 100)
    }

    // MARK: Targeted corruptions and their messages

    static func message(_ bytes: [UInt8], name: String, _ body: (ELFFile) throws(ELFError) -> Void) -> String {
        do throws(ELFError) {
            try body(try ELFFile(bytes: bytes, name: name))
            return "no error"
        } catch {
            return error.description
        }
    }

    static func put<T: FixedWidthInteger>(_ value: T, into bytes: inout [UInt8], at offset: Int) {
        for k in 0..<MemoryLayout<T>.size { bytes[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
    }

    @Test func truncatedSectionHeaderNamesItsIndexAndOffset() throws {
        let object = try Fixtures.compileFixture("elf_sample.c", flags: ["-O2", "-c"])
        let original = [UInt8](try Data(contentsOf: object))
        let elf = try ELFFile(bytes: original, name: "sample.o")
        #expect(elf.sections.count > 13)
        let header12 = Int(elf.header.sectionHeaderOffset) + 12 * 64
        let text = Self.message(Array(original.prefix(header12 + 20)), name: "sample.o") { _ in }
        #expect(text == "sample.o: section header 12 at offset \(Hex.address(UInt64(header12))) is truncated: "
                + "expected 64 bytes, found 20")
    }

    @Test func corruptSymbolAndRelocationNameTheEntry() throws {
        let kernel = try Fixtures.debianKernel()
        let original = [UInt8](try Data(contentsOf: kernel.nfsKo))
        let elf = try ELFFile(bytes: original, name: "nfs.ko")
        let symtab = try #require(elf.section(named: ".symtab"))
        let strtab = elf.sections[Int(symtab.link)]

        // Symbol 40's st_name far outside .strtab.
        var bytes = original
        let symbol40 = Int(symtab.offset) + 40 * 24
        Self.put(UInt32(0x00ff_ff00), into: &bytes, at: symbol40)
        let badName = Self.message(bytes, name: "nfs.ko") { elf throws(ELFError) in _ = try elf.symbols() }
        #expect(badName == "nfs.ko: symbol 40 of .symtab at offset \(Hex.address(UInt64(symbol40))): name index 0xffff00 "
                + "is outside .strtab (expected below \(Hex.address(strtab.size)))")

        // Relocation 7 of .rela.text pointing at a symbol that does not exist.
        bytes = original
        let relaText = try #require(elf.section(named: ".rela.text"))
        let relocation7 = Int(relaText.offset) + 7 * 24
        Self.put(UInt32(0x00ff_ffff), into: &bytes, at: relocation7 + 12)   // high word of r_info
        let text = try #require(elf.section(named: ".text"))
        let badSymbol = Self.message(bytes, name: "nfs.ko") { elf throws(ELFError) in _ = try elf.relocations(applyingTo: text) }
        let symbolCount = symtab.size / 24
        #expect(badSymbol == "nfs.ko: relocation 7 of .rela.text at offset \(Hex.address(UInt64(relocation7))): expected "
                + "a symbol index below \(symbolCount) (entries in .symtab), found 16777215")

        // A symbol table entry size of 0.
        bytes = original
        let symtabHeader = Int(elf.header.sectionHeaderOffset) + symtab.index * 64
        Self.put(UInt64(0), into: &bytes, at: symtabHeader + 56)
        let badEntrySize = Self.message(bytes, name: "nfs.ko") { elf throws(ELFError) in _ = try elf.symbols() }
        #expect(badEntrySize == "nfs.ko: section header \(symtab.index) (.symtab) sh_entsize at offset "
                + "\(Hex.address(UInt64(symtabHeader))): expected 24 bytes per symbol, found 0")

        // A section whose contents lie past the end of the file.
        bytes = original
        let textHeader = Int(elf.header.sectionHeaderOffset) + text.index * 64
        Self.put(UInt64(bytes.count - 16), into: &bytes, at: textHeader + 24)
        let pastEnd = Self.message(bytes, name: "nfs.ko") { elf throws(ELFError) in _ = try elf.data(of: elf.sections[text.index]) }
        #expect(pastEnd == "nfs.ko: section \(text.index) (.text) contents at offset \(Hex.address(UInt64(bytes.count - 16))) "
                + "is truncated: expected \(text.size) bytes, found 16")

        // A note whose name size runs past its section.
        bytes = original
        let buildID = try #require(elf.section(named: ".note.gnu.build-id"))
        Self.put(UInt32(0x1000), into: &bytes, at: Int(buildID.offset))
        let badNote = Self.message(bytes, name: "nfs.ko") { elf throws(ELFError) in _ = try elf.buildID() }
        #expect(badNote == "nfs.ko: note 0 in .note.gnu.build-id name at offset \(Hex.address(buildID.offset + 12)) "
                + "is truncated: expected 4096 bytes, found \(buildID.size - 12)")

        // SHN_XINDEX without an SHT_SYMTAB_SHNDX table.
        bytes = original
        Self.put(UInt16(0xffff), into: &bytes, at: Int(symtab.offset) + 5 * 24 + 6)
        let xindex = Self.message(bytes, name: "nfs.ko") { elf throws(ELFError) in _ = try elf.symbols() }
        #expect(xindex.contains("symbol 5 of .symtab") && xindex.contains("no SHT_SYMTAB_SHNDX section"))
    }

    @Test func headerProblemsAreNamed() throws {
        let object = try Fixtures.compileFixture("elf_sample.c", flags: ["-O2", "-c"])
        let original = [UInt8](try Data(contentsOf: object))

        #expect(Self.message([], name: "empty") { _ in } == "empty: not an ELF file: expected magic 7f 45 4c 46 "
                + "(or xz/zstd/gzip), found an empty file")
        #expect(Self.message(Array("#!/bin/sh\n".utf8), name: "script") { _ in }.contains("found 23 21 2f 62 69 6e 2f 73 68 0a"))
        #expect(Self.message(Array(original.prefix(40)), name: "short.o") { _ in }
                == "short.o: ELF header at offset 0x0 is truncated: expected 64 bytes, found 40")

        var bigEndian = original
        bigEndian[5] = 2
        #expect(Self.message(bigEndian, name: "be.o") { _ in }
                == "be.o: ELF identification EI_DATA at offset 0x5: unsupported: expected 1 (little-endian), found 2 (big-endian)")

        var badNames = original
        Self.put(UInt16(0x7000), into: &badNames, at: 62)
        #expect(Self.message(badNames, name: "names.o") { _ in }.hasPrefix("names.o: ELF header e_shstrndx at offset 0x3e: "
                + "expected a section index below"))

        var absurdCount = original
        Self.put(UInt16(0xfff0), into: &absurdCount, at: 60)
        let absurd = Self.message(absurdCount, name: "count.o") { _ in }
        #expect(absurd.hasPrefix("count.o: section header ") && absurd.contains("is truncated: expected 64 bytes"))

        var tinyEntries = original
        Self.put(UInt16(10), into: &tinyEntries, at: 58)
        #expect(Self.message(tinyEntries, name: "entsize.o") { _ in }
                == "entsize.o: ELF header e_shentsize at offset 0x3a: expected at least 64, found 10")
    }

    @Test(.timeLimit(.minutes(1)))
    func fileSystemProblemsAreNamed() throws {
        let folder = try Fixtures.temporaryFolder("suture-elf-files")
        func message(_ path: String) -> String {
            do throws(ELFError) { _ = try ELFFile(path: path); return "no error" } catch { return error.description }
        }
        let missing = folder.appendingPathComponent("missing.ko").path
        #expect(message(missing) == "\(missing): open failed: No such file or directory (errno 2)")
        #expect(message(folder.path).hasPrefix("\(folder.path): open (not a regular file) failed"))
        let empty = folder.appendingPathComponent("empty.o")
        try Data().write(to: empty)
        #expect(message(empty.path).hasSuffix("found an empty file"))
        // A FIFO would block a reader forever: refused before reading.
        let fifo = folder.appendingPathComponent("fifo").path
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(message(fifo).contains("not a regular file"))
    }

    @Test func corruptCompressedModulesAreDecompressionErrors() throws {
        let object = try Fixtures.compileFixture("elf_sample.c", flags: ["-O2", "-c"])
        for tool in [["xz", "-c"], ["zstd", "-c", "-q"], ["gzip", "-c"]] {
            let compressed = [UInt8](try Fixtures.run(tool[0], Array(tool.dropFirst()) + [object.path]).stdoutData)
            #expect(try ELFFile(bytes: compressed, name: "m.ko").compression == tool[0])
            let truncated = Self.message(Array(compressed.prefix(compressed.count - 9)), name: "m.ko") { _ in }
            #expect(truncated.hasPrefix("m.ko: \(tool[0]) stream at offset 0x"), Comment(rawValue: truncated))
            var random = SplitMix64(seed: 42)
            for _ in 0..<50 {
                var bytes = compressed
                bytes[8 + random.below(bytes.count - 8)] ^= UInt8(1 + random.below(255))
                Self.exercise(bytes, name: "flipped.ko")     // an error or (rarely) a still-valid stream
            }
        }
    }
}
