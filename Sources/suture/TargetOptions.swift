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
        "lab (default), local, gdb:HOST:PORT, pid:N, kmem[:PATH], mem[:PATH], kcore[:PATH], file:PATH.", valueName: "target"))
    var target: String = "lab"

    @Option(name: .long, help: ArgumentHelp("Symbols of the target from a kallsyms file.", valueName: "file"))
    var kallsyms: String?

    @Option(name: .customLong("system-map"), help: ArgumentHelp("Symbols of the target from a System.map.", valueName: "file"))
    var systemMap: String?

    @Option(name: .long, help: ArgumentHelp("Symbols from an ELF file (for file: targets, the file itself; for pid:N, an unstripped copy of the executable or a library, matched by build-id).", valueName: "file"))
    var elf: String?

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("The journal's folder (default $SUTURE_STATE_DIR or /var/lib/suture).", valueName: "dir"))
    var stateDirectory: String?

    var journal: Journal { Journal(directory: stateDirectory ?? Journal.defaultDirectory()) }

    /// What a command will do with the target: `-t local` can be read without the helper module.
    enum Access { case read, write }

    /// Opens the target and gathers its symbols.
    func open(access: Access = .write) throws -> TargetSession {
        let spec = try TargetSpec.parse(target)
        if case let .process(pid) = spec { return try Self.openProcess(pid: pid, name: spec.description, symbolFile: elf,
                                                                        otherSources: kallsyms ?? systemMap) }
        let explicit = try explicitSymbols()
        switch spec {
        case let .gdb(host, port):
            let target = try GDBRemoteTarget(host: host, port: port, kernel: explicit.map(Self.kernelSymbols))
            return TargetSession(name: spec.description, target: target, symbols: explicit)
        case .lab:
            // The lab VM's gdbstub, with the guest's own kallsyms (cached per boot and module list).
            let lab = LabVM()
            guard case let .up(state) = try lab.status() else { throw LabError.notUp(runFolder: LabPaths().runFolder) }
            let symbols = try explicit ?? lab.kallsyms().index()
            let lease = try LabGDBLease()
            let target = try GDBRemoteTarget(host: "127.0.0.1", port: state.gdbPort, kernel: Self.kernelSymbols(symbols))
            return TargetSession(name: "lab", target: target, symbols: symbols, lease: lease)
        case .process:
            fatalError("handled above")
        case let .file(path):
            let symbols = try explicit ?? SymbolSources.elf(path)
            return TargetSession(name: spec.description, target: try FileTarget(path: path), symbols: symbols)
        case let .kmem(path):
            let symbols = try explicit ?? Self.procKallsyms()
            return TargetSession(name: spec.description, target: try KmemTarget(path: path, kernel: Self.kernelSymbols(symbols)), symbols: symbols)
        case let .mem(path):
            let symbols = try explicit ?? Self.procKallsyms()
            // /dev/mem needs phys_base (and page_offset_base) to translate: read their values through
            // /proc/kcore, which maps virtual addresses itself.
            let kernel = Self.kernelSymbols(symbols)
            guard let physBaseAddress = kernel.physBase else {
                throw CommandFailure("-t mem: no phys_base symbol in the kernel's symbols (give --kallsyms or --system-map)")
            }
            let kcore = try KcoreTarget(kernel: kernel)
            defer { kcore.close() }
            func value(_ address: UInt64) throws -> UInt64 {
                try kcore.read(at: address, count: 8).reversed().reduce(0) { $0 << 8 | UInt64($1) }
            }
            let target = try DevMemTarget(path: path, physBase: try value(physBaseAddress),
                                          pageOffsetBase: try kernel.pageOffsetBase.map(value), kernel: kernel)
            return TargetSession(name: spec.description, target: target, symbols: symbols)
        case let .kcore(path):
            let symbols = try explicit ?? Self.procKallsyms()
            return TargetSession(name: spec.description, target: try KcoreTarget(path: path, kernel: Self.kernelSymbols(symbols)), symbols: symbols)
        case .local:
            // The running kernel: /dev/kmem where it still exists, else the helper module's /dev/suture.
            let symbols = try explicit ?? Self.procKallsyms()
            if FileManager.default.fileExists(atPath: TargetSpec.defaultKmemPath) {
                return TargetSession(name: "local", target: try KmemTarget(path: TargetSpec.defaultKmemPath, kernel: Self.kernelSymbols(symbols)), symbols: symbols)
            }
            return TargetSession(name: "local", target: try Self.openLocalKernel(access: access, symbols: symbols), symbols: symbols)
        }
    }

    /// `/dev/suture`, or for reading while the module is not loaded (it was unloaded with patches
    /// in place, say), /proc/kcore. Writing without the module is refused before anything is
    /// touched, with what loading it takes.
    static func openLocalKernel(access: Access, symbols: SymbolIndex) throws -> MemoryTarget {
        let device = LocalKernelTarget.defaultDevicePath
        if FileManager.default.fileExists(atPath: device) { return try LocalKernelTarget(devicePath: device) }
        let obstacles = KernelModuleStatus.current(device: device).obstacles
        // What to do next: load it, or (when something stops that) what stops it.
        let next = obstacles.isEmpty ? "run `suture kmod load` first"
            : "`suture kmod load` cannot load it now:\n" + obstacles.map { "  - \($0)" }.joined(separator: "\n")
                + (obstacles.contains(where: \.isLiftedBySigning) ? "\n  " + KernelModuleStatus.signingHint : "")
        guard access == .read else {
            throw CommandFailure("-t local: the helper module is not loaded (no \(device)) and writes to this kernel go through it; "
                                 + "nothing was changed; " + next)
        }
        do {
            let target = try KcoreTarget(path: TargetSpec.defaultKcorePath, kernel: kernelSymbols(symbols))
            writeError("note: -t local: the helper module is not loaded (no \(device)); reading through \(TargetSpec.defaultKcorePath). "
                       + "Writing and reverting need `suture kmod load`.")
            return target
        } catch {
            throw CommandFailure("-t local: the helper module is not loaded (no \(device)) and \(TargetSpec.defaultKcorePath) cannot be read "
                                 + "(\(error)); " + next)
        }
    }

    private func explicitSymbols() throws -> SymbolIndex? {
        if let kallsyms { return try SymbolSources.kallsyms(kallsyms) }
        if let systemMap { return try SymbolSources.systemMap(systemMap) }
        if let elf { return try SymbolSources.elf(elf) }
        return nil
    }

    /// A process with the symbols of every mapped file, shifted by its load bias; `--elf` supplies
    /// symbols for a stripped file of the same build-id.
    static func openProcess(pid: Int32, name: String, symbolFile: String?, otherSources: String?) throws -> TargetSession {
        if let otherSources {
            throw CommandFailure("\(otherSources): -t pid:N reads the symbols of the process' own files; give --elf FILE for a stripped one")
        }
        let target = try ProcessTarget(pid: pid)
        do {
            let snapshot = try ProcessSymbols.snapshot(pid: pid, options: .init(symbolFiles: symbolFile.map { [$0] } ?? []))
            return TargetSession(name: name, target: target, symbols: snapshot.index, process: snapshot)
        } catch {
            target.close()
            throw error
        }
    }

    static func procKallsyms() throws -> SymbolIndex {
        try SymbolSources.kallsyms("/proc/kallsyms")
    }

    static func kernelSymbols(_ index: SymbolIndex) -> KernelSymbols {
        KernelSymbols { name in index.symbols(named: name).first(where: { $0.module == nil })?.address }
    }
}

/// An open target with its symbols; closing resumes and releases it.
final class TargetSession {
    let name: String
    let target: MemoryTarget
    let symbols: SymbolIndex?
    /// For pid:N: the mapped files and where their symbols came from.
    let process: ProcessSymbols.Snapshot?
    /// Resumes the target on SIGINT/SIGTERM: a stopped kernel or process must never be left behind.
    private let signalGuard: SignalGuard?
    /// The lab's gdbstub turn (LabGDBLease), released after the target is closed.
    private let lease: AnyObject?

    init(name: String, target: MemoryTarget, symbols: SymbolIndex?, process: ProcessSymbols.Snapshot? = nil,
         lease: AnyObject? = nil) {
        self.name = name
        self.lease = lease
        self.target = target
        self.symbols = symbols
        self.process = process
        signalGuard = try? SignalGuard.install()
        signalGuard?.protect(target)
    }

    deinit {
        target.close()
        signalGuard?.uninstall()
    }

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
        do { return try expression.resolve(in: symbols) } catch {
            // A name missing from a stripped process: say why, and how to give its symbols.
            guard let notes = process?.notes, !notes.isEmpty else { throw error }
            throw CommandFailure("\(error)\n" + notes.map { "note: " + $0 }.joined(separator: "\n"))
        }
    }

    /// A bundle made from one file, narrowed to that file's image in this process (see
    /// `ProcessBinding`); other bundles and targets pass unchanged.
    func bind(_ bundle: PatchBundle) -> PatchBundle {
        guard let process, let symbols else { return bundle }
        return ProcessBinding.bind(bundle, images: process.images, symbols: symbols).bundle
    }
}
