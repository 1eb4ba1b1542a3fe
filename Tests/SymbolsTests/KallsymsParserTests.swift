import ELF
import Foundation
import Symbols
import Testing
import TestSupport

@Suite struct KallsymsParserTests {
    /// Every line of the host's kallsyms, compared field by field with awk's split of the same text.
    @Test func hostKallsymsMatchesAwk() throws {
        let file = try SymbolsFixtures.kallsymsSnapshot()
        let records = try KallsymsParser.parse(SymbolsFixtures.read(file), file: file.path)

        let lineCount = try Fixtures.check("sh", ["-c", "wc -l < '\(file.path)'"]).trimmingWhitespace()
        #expect(records.count == Int(lineCount))

        // awk splits on blanks: $4 is "[module]" when present.
        let awk = try Fixtures.check("awk", ["{ print $1, $2, $3, $4 }", file.path])
        let expected = SymbolsFixtures.lines(awk)
        try #require(expected.count == records.count)
        var mismatches: [String] = []
        for (record, line) in zip(records, expected) {
            let ours = "\(Hex.padded(record.address)) \(record.kind) \(record.name) "
                + (record.module.map { "[\($0)]" } ?? "")
            if ours != line, mismatches.count < 5 { mismatches.append("ours \(ours) | awk \(line)") }
        }
        #expect(mismatches.isEmpty, "\(mismatches)")
    }

    /// A few symbols looked up with grep: the anchor symbols, a `.cold` part and a module line.
    @Test func hostKallsymsAgreesWithGrep() throws {
        let file = try SymbolsFixtures.kallsymsSnapshot()
        let records = try KallsymsParser.parse(SymbolsFixtures.read(file), file: file.path)
        let index = SymbolIndex(records)

        // The first `.cold` symbol and its parent, and the first module symbol, whatever this host has.
        let coldLine = try Fixtures.check("sh", ["-c", "grep -m1 -E ' [tT] [a-z_0-9]+\\.cold$' '\(file.path)'"])
        let coldName = String(try #require(coldLine.split(separator: " ").last)).trimmingWhitespace()
        let parentName = String(coldName.dropLast(".cold".count))
        let moduleLine = try Fixtures.check("sh", ["-c", "grep -m1 -P '\\t\\[' '\(file.path)'"])
        let moduleSymbol = String(moduleLine.split(separator: " ")[2].split(separator: "\t")[0])

        for name in ["_text", "_stext", "startup_64", coldName, parentName, moduleSymbol] {
            let grep = try Fixtures.check("grep", ["-P", " \(NSRegularExpression.escapedPattern(for: name))(\\t|$)", file.path])
            let expected = SymbolsFixtures.lines(grep).map { line -> String in
                let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                return fields.joined(separator: " ")
            }
            let ours = index.symbols(named: name).map { r in
                "\(Hex.padded(r.address)) \(r.kind) \(r.name)" + (r.module.map { " [\($0)]" } ?? "")
            }
            // grep lists in file order, we in address order.
            #expect(ours.sorted() == expected.sorted(), "\(name)")
        }

        // `.cold` parts are symbols of their own, not offsets of the parent.
        let cold = try index.resolve(name: coldName)
        let parent = try index.resolve(name: parentName, ordinal: 1)
        #expect(cold.address != parent.address)
        #expect(index.symbolize(cold.address)?.symbol.name == coldName)

        let module = try #require(index.symbols(named: moduleSymbol).first)
        #expect(module.module == moduleLine.split(separator: "[").last.map { String($0.dropLast(2)) })
    }

    /// A non-root reader of /proc/kallsyms sees every address as zero (kptr_restrict): the parser
    /// must say so, not return a list of symbols at 0.
    @Test func zeroAddressesOfUnprivilegedReaderAreAnError() throws {
        let out = try Fixtures.run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "cat", "/proc/kallsyms"])
        try #require(out.status == 0, "setpriv: \(out.stderr)")
        try #require(out.stdout.hasPrefix("0000000000000000 "), "an unprivileged reader sees addresses here; cannot test hiding")
        #expect {
            _ = try KallsymsParser.parse([UInt8](out.stdoutData), file: "/proc/kallsyms (uid 65534)")
        } throws: { error in
            guard case let SymbolError.addressesHidden(file, symbols) = error else { return false }
            return file == "/proc/kallsyms (uid 65534)" && symbols == SymbolsFixtures.lines(out.stdout).count
                && "\(error)".contains("kptr_restrict")
        }
    }

    /// The line shapes the lab's kallsyms has: module names after a tab in brackets, long module
    /// names, `.cold` parts, and module/core name clashes.
    @Test func moduleLinesAndColdParts() throws {
        let text = """
            ffffffff81000000 T _text
            ffffffffc03b2260 t nfs_flock\t[nfs]
            ffffffffc03b23a0 t nfs_flock.cold\t[nfs]
            ffffffffc03b2400 T nfs_file_read\t[nfs]
            ffffffffc0a01000 t filelayout_read_pagelist\t[nfs_layout_nfsv41_files]
            ffffffffc0a01100 t init_module\t[nfs_layout_nfsv41_files]
            ffffffffc03b3000 t init_module\t[nfs]

            """
        let records = try KallsymsParser.parse(Array(text.utf8), file: "crafted")
        #expect(records.map(\.name) == ["_text", "nfs_flock", "nfs_flock.cold", "nfs_file_read",
                                        "filelayout_read_pagelist", "init_module", "init_module"])
        #expect(records.map(\.module) == [nil, "nfs", "nfs", "nfs", "nfs_layout_nfsv41_files",
                                          "nfs_layout_nfsv41_files", "nfs"])
        #expect(records[1].address == 0xffffffffc03b2260 && records[1].kind == "t" && records[1].isFunction)

        let index = SymbolIndex(records)
        // Sizes stop at the next symbol of the same module, not at another module's symbol.
        #expect(index.resolve(nameOrNil: "nfs_flock")?.size == 0x140)
        #expect(index.resolve(nameOrNil: "nfs_file_read")?.size == 0xc00)
        #expect(index.resolve(nameOrNil: "filelayout_read_pagelist")?.size == 0x100)
        let hit = try #require(index.symbolize(0xffffffffc03b228f))
        #expect(hit.symbol.name == "nfs_flock" && hit.offset == 0x2f)
        #expect(index.symbolize(0xffffffffc03b23a4)?.symbol.name == "nfs_flock.cold")

        // init_module is in two modules: by module it is unique, bare it is ambiguous.
        #expect(try index.resolve(name: "init_module", module: "nfs").address == 0xffffffffc03b3000)
        #expect(try index.resolve(name: "init_module", module: "nfs-layout-nfsv41-files").address == 0xffffffffc0a01100)
        #expect(throws: SymbolError.ambiguous(name: "init_module", module: nil, candidates: [
            "init_module/1 at 0xffffffffc03b3000 [nfs]",
            "init_module/2 at 0xffffffffc0a01100 [nfs_layout_nfsv41_files]",
        ])) { try index.resolve(name: "init_module") }
    }

    @Test(arguments: [
        ("ffffffff81000000 T", 2, 19, "a space after the one-letter type"),
        ("ffffffff81000000 T _text extra", 1, 25, "end of line or a tab and [module] after the name"),
        ("ffffffff81000000 T nfs_flock\tnfs", 1, 30, "[module] after the tab"),
        ("ffffffff81000000 T nfs_flock\t[nfs", 1, 34, "] closing the module name"),
        ("zzz T x", 1, 1, "a hex address"),
        ("ffffffff81000000T x", 1, 17, "a space after the address"),
        ("11111111111111111 T x", 1, 17, "at most 16 hex digits of address"),
    ])
    func malformedLinesNameLineAndColumn(line: String, lineNumber: Int, column: Int, expected: String) throws {
        // Put the bad line after `lineNumber - 1` good ones.
        let text = String(repeating: "ffffffff81000000 T _text\n", count: lineNumber - 1) + line + "\n"
        #expect {
            _ = try KallsymsParser.parse(Array(text.utf8), file: "bad.map")
        } throws: { error in
            guard case let SymbolError.malformedLine(file, l, c, e, _) = error else { return false }
            return file == "bad.map" && l == lineNumber && c == column && e == expected
        }
    }

    /// Debian's kernel package ships a placeholder System.map: the error must show its text.
    @Test func debianPlaceholderSystemMapIsRejected() throws {
        let kernel = try Fixtures.debianKernel()
        let path = kernel.root.appendingPathComponent("boot/System.map-\(Fixtures.DebianKernel.release)")
        #expect {
            _ = try SystemMapParser.parse(SymbolsFixtures.read(path), file: path.path)
        } throws: { error in
            "\(error)".contains("real System.map is in the linux-image")
        }
    }

    @Test func emptyInputIsAnError() {
        #expect(throws: SymbolError.noSymbols(file: "empty")) {
            _ = try KallsymsParser.parse([UInt8](), file: "empty")
        }
    }
}

extension SymbolIndex {
    func resolve(nameOrNil name: String) -> SymbolRecord? { try? resolve(name: name) }
}
