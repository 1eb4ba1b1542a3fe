import ArgumentParser
import Foundation
import ELF
import Symbols
import Targets
import Patching
import Lab

/// `-t/--target` and the symbol sources shared by every command that touches a live system.
struct TargetOptions: ParsableArguments {
    @Option(name: [.short, .long], help: ArgumentHelp(
        "lab (default), gdb:HOST:PORT, pid:N, kmem[:PATH], mem[:PATH], kcore[:PATH], file:PATH.", valueName: "target"))
    var target: String = "lab"

    @Option(name: .long, help: ArgumentHelp("Symbols of the target from a kallsyms file.", valueName: "file"))
    var kallsyms: String?

    @Option(name: .customLong("system-map"), help: ArgumentHelp("Symbols of the target from a System.map.", valueName: "file"))
    var systemMap: String?

    @Option(name: .long, help: ArgumentHelp("Symbols from an ELF file (for file: targets, the file itself).", valueName: "file"))
    var elf: String?

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("The journal's folder (default $SUTURE_STATE_DIR or /var/lib/suture).", valueName: "dir"))
    var stateDirectory: String?

    var journal: Journal { Journal(directory: stateDirectory ?? Journal.defaultDirectory()) }

    /// Opens the target and gathers its symbols.
    func open() throws -> TargetSession {
        let spec = try TargetSpec.parse(target)
        let explicit = try explicitSymbols()
        switch spec {
        case let .gdb(host, port):
            let target = try GDBRemoteTarget(host: host, port: port, kernel: explicit.map(Self.kernelSymbols))
            return TargetSession(name: spec.description, target: target, symbols: explicit)
        case .lab, .file, .kmem, .mem, .kcore:
            throw CommandFailure("TEMP")
        case let .process(pid):
            let symbols = try explicit ?? ProcessSymbols.load(pid: pid)
            return TargetSession(name: spec.description, target: try ProcessTarget(pid: pid), symbols: symbols)
        case .local:
            throw CommandFailure("-t local needs the helper kernel module, which this build does not have yet (issue 7); on a kernel with /dev/kmem use -t kmem")
        }
    }

    private func explicitSymbols() throws -> SymbolIndex? {
        if let kallsyms { return SymbolIndex(try KallsymsParser.parse(try readWhole(kallsyms), file: kallsyms)) }
        if let systemMap { return SymbolIndex(try SystemMapParser.parse(try readWhole(systemMap), file: systemMap)) }
        if let elf { return try SymbolIndex(elf: ELFFile(path: elf)) }
        return nil
    }

    static func procKallsyms() throws -> SymbolIndex {
        SymbolIndex(try KallsymsParser.parse(try readWhole("/proc/kallsyms"), file: "/proc/kallsyms"))
    }

    static func kernelSymbols(_ index: SymbolIndex) -> KernelSymbols {
        KernelSymbols { name in index.symbols(named: name).first(where: { $0.module == nil })?.address }
    }
}

/// Reads a whole file; /proc files report size 0, so read to the end rather than by size.
func readWhole(_ path: String) throws -> [UInt8] {
    guard let handle = FileHandle(forReadingAtPath: path) else {
        throw CommandFailure("\(path): cannot open (\(String(cString: strerror(errno))))")
    }
    defer { try? handle.close() }
    return [UInt8](try handle.readToEnd() ?? Data())
}

/// An open target with its symbols; closing resumes and releases it.
final class TargetSession {
    let name: String
    let target: MemoryTarget
    let symbols: SymbolIndex?

    init(name: String, target: MemoryTarget, symbols: SymbolIndex?) {
        self.name = name
        self.target = target
        self.symbols = symbols
    }

    deinit { target.close() }

    func engine(journal: Journal) -> PatchEngine {
        var engine = PatchEngine(target: target, targetName: name, symbols: symbols, journal: journal)
        // Fault injection for the kill -9 recovery test; documented in the README's testing section.
        if let delay = ProcessInfo.processInfo.environment["SUTURE_TEST_HUNK_DELAY_US"].flatMap(UInt32.init) {
            engine.delayAfterEachHunkMicroseconds = delay
        }
        return engine
    }

    /// Resolves an address expression through this target's symbols.
    func resolve(_ text: String) throws -> ResolvedAddress {
        let expression = try AddressExpression.parse(text)
        if case let .absolute(address) = expression.base {
            let a = address &+ UInt64(bitPattern: expression.offset)
            let found = symbols?.symbolize(a)
            return ResolvedAddress(address: a, symbol: found?.symbol, offset: found?.offset ?? 0)
        }
        guard let symbols else { throw CommandFailure("\(text): no symbols for \(name) (give --kallsyms, --system-map or --elf)") }
        return try expression.resolve(in: symbols)
    }
}
