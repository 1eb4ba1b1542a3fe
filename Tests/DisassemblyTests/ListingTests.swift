import Disassembly
import ELF
import Foundation
import Testing
import TestSupport

/// `Listing` against `objdump -dr` on the same code: address and byte columns and continuation lines
/// exactly, relocation lines exactly, the same mnemonic root and the same `<symbol+offset>` text.
@Suite("Listing against objdump -dr")
struct ListingTests {
    /// objdump's choice of `<symbol+offset>`: the closest symbol at or before the address in the same
    /// section (functions preferred over other labels at one address).
    static func symbolizer(_ symbols: [Readelf.Symbol], section: Int) -> (UInt64) -> String? {
        // `$x`/`$d` are aarch64 mapping symbols, which objdump does not show.
        let candidates = symbols.filter { $0.section == section && !$0.name.isEmpty && !$0.name.hasPrefix("$")
            && ($0.type == "FUNC" || $0.type == "NOTYPE") }
            .sorted { ($0.value, $0.type == "FUNC" ? 1 : 0) < ($1.value, $1.type == "FUNC" ? 1 : 0) }
        return { address in
            guard let symbol = candidates.last(where: { $0.value <= address }) else { return nil }
            let offset = address - symbol.value
            return offset == 0 ? symbol.name : "\(symbol.name)+\(Hex.address(offset))"
        }
    }

    /// Compares two listings line by line; returns the differences.
    static func compare(ours: [String], objdump theirs: [String]) -> [String] {
        var problems: [String] = []
        if ours.count != theirs.count { problems.append("\(ours.count) lines, objdump \(theirs.count)") }
        for (a, b) in zip(ours, theirs) where problems.count < 30 {
            if b.hasPrefix("\t\t\t") || !b.hasSuffix(" ") && b.split(separator: "\t").count == 2 || b.hasSuffix(" ") {
                // Relocation and continuation lines: exact.
                if a != b { problems.append("ours:    \(a.debugDescription)\nobjdump: \(b.debugDescription)") }
                continue
            }
            let x = a.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            let y = b.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            guard x.count == 3, y.count == 3, x[0] == y[0], x[1] == y[1] else {
                problems.append("ours:    \(a.debugDescription)\nobjdump: \(b.debugDescription)")
                continue
            }
            let ourText = String(x[2]), theirText = String(y[2])
            let ourMnemonic = ourText.split(separator: " ").first.map(String.init) ?? ""
            var theirWords = theirText.split(separator: " ").map(String.init)
            while theirWords.count > 1, Objdump.prefixWords.contains(theirWords[0]) { theirWords.removeFirst() }
            let bytes = x[1].split(separator: " ").compactMap { UInt8($0, radix: 16) }
            var same = Comparison.sameRoot(ourMnemonic, theirWords.first ?? "", bytes: bytes)
            // Every `hex <symbol+offset>` objdump shows (branch targets, RIP-relative comments) appears in ours.
            var rest = Substring(theirText)
            while let open = rest.firstIndex(of: "<"), let close = rest[open...].firstIndex(of: ">") {
                let start = rest[..<open].dropLast().lastIndex(where: { !$0.isHexDigit }).map { rest.index(after: $0) } ?? rest.startIndex
                let reference = rest[start...close]
                if !ourText.contains(reference) { same = false }
                rest = rest[rest.index(after: close)...]
            }
            if !same { problems.append("ours:    \(a.debugDescription)\nobjdump: \(b.debugDescription)") }
        }
        return problems
    }

    @Test("nfs_flock in nfs.ko, with its relocations")
    func nfsFlock() throws {
        let kernel = try Fixtures.debianKernel()
        let symbols = try Readelf.symbols(in: kernel.nfsKo)
        let text = try Readelf.section(".text", in: kernel.nfsKo)
        let function = try Readelf.symbol("nfs_flock", in: kernel.nfsKo)
        let bytes = try Objdump.sectionBytes(kernel.nfsKo, section: ".text")
        let range = Int(function.value)..<Int(function.value + function.size)
        let instructions = try Disassembler(architecture: .x86_64).decode(bytes[range], address: function.value)
        let relocations = try Readelf.relocations(".rela.text", in: kernel.nfsKo)
        let listing = Listing(instructions: instructions,
                              addressWidth: Listing.objdumpAddressWidth(sectionEnd: text.address + text.size),
                              symbolize: Self.symbolizer(symbols, section: text.index),
                              annotations: relocations.filter { range.contains(Int($0.key)) })
        let objdump = try Fixtures.check("objdump", ["-dr", "-j", ".text", "--start-address=\(Hex.address(function.value))",
                                                    "--stop-address=\(Hex.address(function.value + function.size))",
                                                    kernel.nfsKo.path])
        let ours = listing.render().split(separator: "\n").map(String.init)
        let theirs = ObjdumpListing.bodyLines(objdump)
        try #require(theirs.count > 40)
        let problems = Self.compare(ours: ours, objdump: theirs)
        #expect(problems.isEmpty, Comment(rawValue: problems.joined(separator: "\n")))
        // The article's line, as objdump writes it.
        #expect(ours.contains { $0.hasPrefix("    928f:\t74 39                \tje     92ca <nfs_flock+0x6a>") })
    }

    @Test("a gcc object: every function, continuation lines of a 10-byte movabs, relocations")
    func gccObject() throws {
        let object = try Fixtures.compileFixture("disasm_branches.c", flags: ["-O2", "-c"])
        let text = try Readelf.section(".text", in: object)
        let bytes = try Objdump.sectionBytes(object, section: ".text")
        let instructions = try Disassembler(architecture: .x86_64).decode(bytes, address: 0)
        let listing = Listing(instructions: instructions,
                              addressWidth: Listing.objdumpAddressWidth(sectionEnd: text.size),
                              symbolize: Self.symbolizer(try Readelf.symbols(in: object), section: text.index),
                              annotations: try Readelf.relocations(".rela.text", in: object))
        let rendered = listing.render()
        let ours = rendered.split(separator: "\n").map(String.init)
        let theirs = ObjdumpListing.bodyLines(try Fixtures.check("objdump", ["-dr", "-j", ".text", object.path]))
        let problems = Self.compare(ours: ours, objdump: theirs)
        #expect(problems.isEmpty, Comment(rawValue: problems.joined(separator: "\n")))
        #expect(instructions.contains { $0.size > 7 }, "the fixture should hold an instruction longer than 7 bytes")
        #expect(rendered.contains("R_X86_64_PLT32\texternal_work-0x4"))
    }

    @Test("arm64: one word per line, branch targets symbolised, per aarch64 objdump")
    func arm64() throws {
        let folder = try Fixtures.temporaryFolder("suture-arm64")
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = folder.appendingPathComponent("code.s")
        try """
        .text
        f:
          nop
          b.eq 1f
          cbz w0, 1f
          tbnz x3, #40, 1f
          bl f
          blr x1
        1: ret
          svc #0
        g:
          b f
          b.ne g
        """.write(to: source, atomically: true, encoding: .utf8)
        // f and g are local, so the assembler resolves every branch: no relocations, which objdump
        // would otherwise use to name aarch64 branch targets.
        let object = folder.appendingPathComponent("code.o")
        let assembled = try Fixtures.run("aarch64-linux-gnu-as", [source.path, "-o", object.path])
        try #require(assembled.status == 0, Comment(rawValue: "aarch64-linux-gnu-as failed (apt-get install binutils-aarch64-linux-gnu): \(assembled.stderr)"))
        let bytes = try Objdump.sectionBytes(object, section: ".text", objcopy: "aarch64-linux-gnu-objcopy")
        let instructions = try Disassembler(architecture: .arm64).decode(bytes, address: 0)
        let symbols = try Readelf.symbols(in: object)
        let text = try Readelf.section(".text", in: object)
        let listing = Listing(instructions: instructions, addressWidth: Listing.objdumpAddressWidth(sectionEnd: text.size),
                              symbolize: Self.symbolizer(symbols, section: text.index), architecture: .arm64)
        let ours = listing.render().split(separator: "\n").map(String.init)
        let objdump = try Fixtures.run("aarch64-linux-gnu-objdump", ["-d", object.path])
        let theirs = ObjdumpListing.bodyLines(objdump.stdout)
        try #require(theirs.count == instructions.count)
        for (a, b) in zip(ours, theirs) {
            let x = a.split(separator: "\t"), y = b.split(separator: "\t")
            #expect(x.prefix(2) == y.prefix(2), "\(a.debugDescription) vs \(b.debugDescription)")
            // Direct branches: the same `hex <symbol>` text.
            if let open = b.firstIndex(of: "<"), let close = b[open...].firstIndex(of: ">") {
                let start = b[..<open].dropLast().lastIndex(where: { $0 == " " || $0 == "\t" }).map { b.index(after: $0) } ?? open
                let reference = b[start...close]
                #expect(a.contains(reference), "\(a.debugDescription) vs \(b.debugDescription)")
            }
        }
    }

    @Test("objdump's address column width")
    func addressWidth() {
        // nfs.ko .text ends at 0x2a2b0: objdump prints 8 columns ("    9260:").
        #expect(Listing.objdumpAddressWidth(sectionEnd: 0x2a2b0) == 8)
        #expect(Listing.objdumpAddressWidth(sectionEnd: 0xffff_ffff_8200_0000) == 16)
        #expect(Listing.objdumpAddressWidth(sectionEnd: 0x7d) == 4)
    }
}
