import ArgumentParser
import ELF
import Foundation
import Lab
import Symbols
import Targets

/// `suture symbols`: look symbols up by name, address or expression in a kallsyms, a System.map or
/// an ELF file.
struct SymbolsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "symbols",
        abstract: "Look up symbols by name, address or address expression.",
        discussion: """
            Each query is a symbol name (every symbol of that name is listed), an address \
            (0xffffffff810bee50, or bare hex of 8+ digits) or an expression: nfs_flock+0x2f, \
            "nfs_flock [nfs]+0x2f", nfs_flock/2+0x10 (the 2nd nfs_flock in address order), sym+47 \
            (decimal), sym-0x4. Columns: address, type letter, size, module, name, and where the \
            address is (sym+0xoff) or which of several same-named symbols it is (name/N).
            Reads /proc/kallsyms unless a source is given. With -t pid:N, the symbols of a running \
            process: its executable's and each mapped library's (module = the library's file name, \
            libfoo.so:parse_header or "parse_header [libfoo.so]"), at their live addresses.
            """)

    @Option(name: .long, help: ArgumentHelp("A kallsyms file.", valueName: "file"))
    var kallsyms: String?

    @Option(name: .customLong("system-map"), help: ArgumentHelp("A System.map (or `nm -n` output).", valueName: "file"))
    var systemMap: String?

    @Option(name: .long, help: ArgumentHelp("An ELF file (vmlinux, a .ko, a program): its symbol tables. With -t pid:N: symbols for a stripped mapped file of the same build-id.", valueName: "file"))
    var elf: String?

    @Option(name: [.short, .long], help: ArgumentHelp("lab: the lab kernel's kallsyms; pid:N: a running process' mapped files at their live addresses.", valueName: "target"))
    var target: String?

    @Option(name: .customLong("string"), help: ArgumentHelp("With -t pid:N: where this text lies in the read-only data of the process' files (live addresses, e.g. to poke a string).", valueName: "text"))
    var strings: [String] = []

    @Flag(name: .long, help: "Print a JSON array instead of columns.")
    var json = false

    @Argument(help: ArgumentHelp("Names, addresses or expressions.", valueName: "name|address|expression"))
    var queries: [String] = []

    func validate() throws {
        let sources = [kallsyms, systemMap, elf].compactMap { $0 }
        guard sources.count <= 1 else {
            throw ValidationError("give at most one of --kallsyms, --system-map, --elf")
        }
        if target == "lab", !sources.isEmpty {
            throw ValidationError("-t lab reads the lab kernel's kallsyms: give no --kallsyms, --system-map or --elf")
        }
        if target != nil, kallsyms != nil || systemMap != nil {
            throw ValidationError("-t pid:N reads the process' own files: give --elf FILE (for a stripped one), not --kallsyms or --system-map")
        }
        guard !queries.isEmpty || !strings.isEmpty else { throw ValidationError("give at least one name, address or expression") }
        if !strings.isEmpty, target == nil { throw ValidationError("--string searches a live process: give -t pid:N") }
        if !strings.isEmpty, json { throw ValidationError("--string prints lines, not JSON: leave out --json") }
    }

    func run() throws {
        let index: SymbolIndex
        let snapshot: ProcessSymbols.Snapshot?
        do {
            (index, snapshot) = try loadIndex()
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }

        var rows: [Row] = []
        var failed = false
        for query in queries {
            do {
                rows += try lookUp(query, in: index)
            } catch {
                printError("\(query): \(error)")
                failed = true
            }
        }

        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(rows)
            print(String(decoding: data, as: UTF8.self))
        } else {
            printColumns(rows)
        }
        if let snapshot {
            for text in strings {
                let found = ProcessSymbols.occurrences(of: Array(text.utf8), pid: snapshot.pid, images: snapshot.images)
                if found.isEmpty {
                    printError("\"\(text)\": not in the read-only data of any file mapped in pid \(snapshot.pid)")
                    failed = true
                }
                for o in found {
                    print("\(Hex.padded(o.address))  \(o.module ?? o.path)  \(o.section)+\(Hex.address(o.sectionOffset))  \"\(text)\"")
                }
            }
        }
        if failed { throw ExitCode(1) }
    }

    // MARK: Sources

    private func loadIndex() throws -> (SymbolIndex, ProcessSymbols.Snapshot?) {
        if let target {
            let spec = try TargetSpec.parse(target)
            if case .lab = spec {
                // The lab kernel's own kallsyms (KASLR slide and modules included), as -t lab uses it.
                let lab = LabVM()
                guard case .up = try lab.status() else { throw LabError.notUp(runFolder: LabPaths().runFolder) }
                return (try lab.kallsyms().index(), nil)
            }
            guard case let .process(pid) = spec else {
                throw Failure("-t \(target): symbols reads the lab's kallsyms (-t lab) or a live process' files (pid:N); for another kernel give --kallsyms, --system-map or --elf")
            }
            let snapshot = try ProcessSymbols.snapshot(pid: pid, options: .init(symbolFiles: elf.map { [$0] } ?? []))
            for note in snapshot.notes where !queries.isEmpty { printError("note: " + note) }
            return (snapshot.index, snapshot)
        }
        return (try loadFileIndex(), nil)
    }

    private func loadFileIndex() throws -> SymbolIndex {
        if let elf { return try SymbolSources.elf(elf) }
        if let systemMap { return try SymbolSources.systemMap(systemMap) }
        return try SymbolSources.kallsyms(kallsyms ?? "/proc/kallsyms")
    }

    // MARK: Queries

    /// One output line: a symbol, or an address and the symbol containing it.
    struct Row: Encodable {
        var query: String
        var address: UInt64
        var symbol: SymbolRecord?
        var offset: UInt64
        /// `nfs_flock+0x2f` for addresses and expressions, `helper/2` among same-named symbols.
        var location: String?

        enum CodingKeys: String, CodingKey { case query, address, symbol, offset, location }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(query, forKey: .query)
            try c.encode(Hex.address(address), forKey: .address)
            try c.encode(symbol, forKey: .symbol)
            try c.encode(offset, forKey: .offset)
            try c.encode(location, forKey: .location)
        }
    }

    private func lookUp(_ query: String, in index: SymbolIndex) throws -> [Row] {
        let expression = try AddressExpression.parse(query)
        // A plain name lists every symbol of that name, numbered when there are several.
        if case let .symbol(name, nil, nil) = expression.base, expression.offset == 0 {
            let all = index.symbols(named: name)
            guard !all.isEmpty else { throw SymbolError.notFound(name: name, module: nil, elsewhere: []) }
            return all.enumerated().map { n, symbol in
                Row(query: query, address: symbol.address, symbol: symbol, offset: 0,
                    location: all.count > 1 ? "\(name)/\(n + 1)" : nil)
            }
        }
        let resolved = try expression.resolve(in: index)
        guard resolved.symbol != nil else {
            // A relocatable object's symbols are offsets into their sections: a bare address means nothing there.
            let hint = index.records.contains { $0.section != nil }
                ? " (this is a relocatable object: its addresses are section offsets; name a symbol, as in nfs_flock+0x2f)" : ""
            throw Failure("no symbol contains \(Hex.address(resolved.address))" + hint)
        }
        return [Row(query: query, address: resolved.address, symbol: resolved.symbol,
                    offset: resolved.offset, location: resolved.location)]
    }

    // MARK: Output

    private func printColumns(_ rows: [Row]) {
        let table: [[String]] = rows.map { row in
            let symbol = row.symbol
            var cells = [
                Hex.padded(row.address),
                symbol.map { String($0.kind) } ?? "-",
                symbol?.size.map(Hex.address) ?? "-",
                Self.place(of: symbol),
                symbol?.name ?? "-",
            ]
            if let location = row.location { cells.append(location) }
            return cells
        }
        let columns = table.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for cells in table {
            for (k, cell) in cells.enumerated() { widths[k] = max(widths[k], cell.count) }
        }
        for cells in table {
            var line = ""
            for (k, cell) in cells.enumerated() {
                if k > 0 { line += "  " }
                // The last cell is not padded, so lines carry no trailing spaces.
                line += k == cells.count - 1 ? cell : cell.padding(toLength: widths[k], withPad: " ", startingAt: 0)
            }
            print(line)
        }
    }

    /// A failure of the command itself (library errors carry their own messages).
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// The module column: `nfs`, `.text` for a relocatable object's section, `nfs:.text` for both.
    static func place(of symbol: SymbolRecord?) -> String {
        let parts = [symbol?.module, symbol?.section].compactMap { $0 }
        return parts.isEmpty ? "-" : parts.joined(separator: ":")
    }

    private func printError(_ message: String) {
        FileHandle.standardError.write(Data(("suture symbols: " + message + "\n").utf8))
    }
}

