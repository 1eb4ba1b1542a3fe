import Foundation
import ELF
import Symbols
import Disassembly
import Targets
import Patching

/// `suture demo`: the 2007 article replayed on the lab's live Debian 6.1 kernel.
///
/// The article flipped `je` → `jne` in `nfs_flock` through /dev/kmem, after finding the byte with
/// objdump and System.map arithmetic. The demo does the same steps with Suture's checks in between,
/// each step showing the real output and checking what it expects; it stops at the first
/// expectation that fails. On every path out the kernel is left unpatched (if the demo patched it)
/// and the lab as it was found: a lab that was already up stays up, one the demo booted goes down.
///
/// Nothing here prints: each step reports through `report`, the CLI prints.
public struct Demo {
    public struct Options: Sendable {
        public var paths: LabPaths
        /// The journal's folder; nil uses a private temporary folder (removed after a clean run).
        public var journalDirectory: String?
        /// How to boot when no lab with NFS is up.
        public var boot: LabOptions
        /// Asked before each step: true stops the demo there (then it reverts and cleans up as after
        /// a failed step). The CLI answers true after Ctrl-C.
        public var isCancelled: @Sendable () -> Bool

        public init(paths: LabPaths = LabPaths(), journalDirectory: String? = nil,
                    boot: LabOptions = LabOptions(nfs: true), isCancelled: @escaping @Sendable () -> Bool = { false }) {
            self.paths = paths
            self.journalDirectory = journalDirectory
            self.boot = boot
            self.isCancelled = isCancelled
        }
    }

    /// The article's patch: the `je` at `nfs_flock+0x2f` (0x54 on the article's 2.6.22 i386 build).
    public static let function = "nfs_flock"
    public static let module = "nfs"
    public static let offset: UInt64 = 0x2f
    public static let originalBytes: [UInt8] = [0x74, 0x39]
    static let nfsFile = "/mnt/nfs/suture-demo"
    static let tmpfsFile = "/tmp/suture-demo"

    public let options: Options

    public init(options: Options = Options()) {
        self.options = options
    }

    /// Runs every step; returns what was measured, or throws `DemoFailure` naming the step that
    /// failed, what it expected and what it found (after cleaning up).
    public func run(report: @escaping DemoReporter) throws -> DemoSummary {
        var run = DemoRun(options: options, report: report)
        return try run.run()
    }
}

/// What the demo tells its caller, in order.
public enum DemoEvent: Sendable, Hashable {
    /// A new step begins.
    case step(number: Int, total: Int, title: String)
    /// Narration: what is being done and why.
    case say(String)
    /// A command run in the guest, as typed.
    case command(String)
    /// Real output (a command's, a listing, kallsyms lines), verbatim.
    case output(String)
    /// An expectation that held.
    case check(String)
    /// Cleanup after a failure (revert, lab down).
    case cleanup(String)
}

public typealias DemoReporter = @Sendable (DemoEvent) -> Void

/// What a complete run measured.
public struct DemoSummary: Sendable {
    public var seconds: Double
    /// Whether the demo booted the lab itself (and brought it down at the end).
    public var bootedLab: Bool
    public var applyPause: PauseWindow?
    public var revertPause: PauseWindow?
    public var liveAddress: UInt64
    /// Wall time of each step, in order.
    public var steps: [DemoStepTime]
}

public struct DemoStepTime: Sendable, Hashable {
    public var title: String
    public var seconds: Double
}

/// The step that failed, what it expected and what it found; with what cleanup did.
public struct DemoFailure: Error, CustomStringConvertible {
    public var step: String
    public var expected: String
    public var found: String
    public var cleanup: [String] = []
    /// Stopped on request (`Options.isCancelled`), not by a failed expectation.
    public var interrupted = false

    /// The first line: which step, what was expected and found.
    public var headline: String {
        interrupted ? "interrupted before step \"\(step)\"" : "step \"\(step)\" failed: expected \(expected), found \(found)"
    }

    public var description: String {
        var text = headline
        if !cleanup.isEmpty { text += "\n" + cleanup.map { "  cleanup: " + $0 }.joined(separator: "\n") }
        return text
    }
}

/// One run's state: what to undo on the way out.
private struct DemoRun {
    let options: Demo.Options
    let report: DemoReporter
    let vm: LabVM
    let started = Date()
    static let total = 12

    var stepNumber = 0
    var stepTitle = ""
    var stepStarted = Date()
    var stepTimes: [DemoStepTime] = []

    // Cleanup state.
    var bootedLab = false
    var target: GDBRemoteTarget?
    /// Our turn at the gdbstub (see LabGDBLease), held while `target` is open.
    var lease: LabGDBLease?
    var engine: PatchEngine?
    var appliedID: String?
    var privateJournal: String?

    init(options: Demo.Options, report: @escaping DemoReporter) {
        self.options = options
        self.report = report
        self.vm = LabVM(paths: options.paths)
    }

    mutating func run() throws -> DemoSummary {
        do {
            let summary = try steps()
            if let privateJournal { try? FileManager.default.removeItem(atPath: privateJournal) }
            return summary
        } catch {
            var failure = error as? DemoFailure
                ?? DemoFailure(step: "\(stepNumber). \(stepTitle)", expected: "the step to complete", found: "an error: \(error)")
            failure.cleanup = cleanUp()
            throw failure
        }
    }

    // MARK: The steps

    private mutating func steps() throws -> DemoSummary {
        // 1. The lab, with an NFS mount to lock files on.
        try begin("Boot the lab: Debian's 6.1 kernel under QEMU, serving a tmpfs over NFSv3 to itself")
        let state = try bootOrReuse()

        // 2. The symptom the article starts from: flock() on NFS works (the behaviour to change).
        try begin("flock() on the NFS mount works (the behaviour the article wanted to change)")
        say("flocktest takes an exclusive, non-blocking flock(2) and prints the result")
        try expectFlock(on: Demo.nfsFile, ok: true)

        // 3. Where the function lives: System.map in 2007, the guest's kallsyms for a 6.1 module.
        try begin("Find nfs_flock [nfs] in the guest's /proc/kallsyms")
        let kallsyms = try vm.kallsyms()
        let lines = Self.lines(in: kallsyms.text, endingWith: "\t[\(Demo.module)]", name: Demo.function)
        guard lines.count == 1 else {
            throw fail(expected: "one kallsyms line for \(Demo.function) [\(Demo.module)]", found: "\(lines.count): \(lines)")
        }
        say("the guest's /proc/kallsyms (\(kallsyms.lineCount) lines, moved over the virtio bulk port), its \(Demo.function) line:")
        report(.output(lines[0] + "\n"))
        let symbols = try kallsyms.index()
        let place = try AddressExpression.parse("\(Demo.function) [\(Demo.module)]+\(Hex.address(Demo.offset))").resolve(in: symbols)
        let functionAddress = place.address - Demo.offset
        say("KASLR is \(state.kaslr ? "on: the address changes every boot" : "off"); the article read `c01a9d21 t nfs_flock` from System.map")
        check("nfs_flock [nfs] is at \(Hex.address(functionAddress))")

        // 4. The object file: where the je is, relative to the function's start.
        try begin("Disassemble nfs_flock from nfs.ko (the article's objdump -d of file.o)")
        guard let koPath = ShippedModules(paths: options.paths).path(ofModule: Demo.module) else {
            throw fail(expected: "\(Demo.module).ko in the cached kernel package under \(options.paths.kernelRoot)",
                       found: "no such module in modules.order (run `suture lab fetch`)")
        }
        let reference = try ReferenceObject(path: koPath)
        let function = try reference.function(named: Demo.function)
        let disassembler = try Disassembler(architecture: .x86_64)
        let fileStart = function.offset
        let section = function.section
        let fileInstructions = disassembler.decode(function.bytes, address: fileStart)
        say("\(koPath) (\(section.name), with its relocations, as objdump -dr shows it):")
        report(.output(listing(fileInstructions, upTo: fileStart + Demo.offset, name: Demo.function, start: fileStart,
                               size: function.size, annotations: try relocationNotes(reference, function))))
        let je = fileInstructions.first { $0.address == fileStart + Demo.offset }
        guard let je, je.bytes == Demo.originalBytes, je.mnemonic == "je" else {
            throw fail(expected: "74 39 je at \(Demo.function)+0x2f in nfs.ko",
                       found: je.map { $0.summary } ?? "no instruction starts there")
        }
        say("nfs_flock starts at \(section.name)+\(Hex.address(fileStart)) (file offset \(Hex.address(section.offset)) + \(Hex.address(fileStart)) = \(Hex.address(function.fileOffset))), \(function.size) bytes")
        say("the je is at \(section.name)+\(Hex.address(je.address)) (file offset \(Hex.address(section.offset + je.address))): "
            + "\(Hex.address(je.address)) - \(Hex.address(fileStart)) = \(Hex.address(je.address - fileStart))")
        say("live: kallsyms \(Hex.address(functionAddress)) + \(Hex.address(Demo.offset)) = \(Hex.address(place.address))"
            + "   (the article: 0x8d9 - 0x885 = 0x54, c01a9d21 + 0x54)")
        check("nfs.ko has 74 39 je at nfs_flock+0x2f, the `if (!(fl->fl_flags & FL_FLOCK)) return -ENOLCK;` branch")

        // 5. The live function, read through QEMU's gdbstub, compared with the file byte by byte.
        try begin("Disassemble nfs_flock live (QEMU gdbstub) and verify every byte against nfs.ko")
        lease = try LabGDBLease(paths: options.paths)
        let target = try GDBRemoteTarget(host: "127.0.0.1", port: state.gdbPort, kernel: KernelSymbols { name in
            symbols.symbols(named: name).first(where: { $0.module == nil })?.address
        })
        self.target = target
        let live = try target.read(at: functionAddress, count: function.size)
        let liveInstructions = disassembler.decode(live, address: functionAddress)
        say("the same \(function.size) bytes read from the running kernel at \(Hex.address(functionAddress)):")
        report(.output(listing(liveInstructions, upTo: place.address, name: Demo.function, start: functionAddress,
                               size: function.size, annotations: [:], symbols: symbols)))
        let liveJe = liveInstructions.first { $0.address == place.address }
        guard let liveJe, liveJe.bytes == Demo.originalBytes else {
            throw fail(expected: "74 39 (je) live at nfs_flock+0x2f (\(Hex.address(place.address)))",
                       found: liveJe.map { $0.summary } ?? "no instruction starts there: " + Hex.bytes(live[Int(Demo.offset)...].prefix(2)))
        }
        let comparison = function.compare(live: live)
        say("where the live bytes differ from nfs.ko, and the table that explains each:")
        report(.output(differences(function, live: live)))
        guard comparison.matches else {
            throw fail(expected: "every byte that differs from nfs.ko explained by a relocation or a rewrite table",
                       found: comparison.summary)
        }
        check(comparison.summary)

        // 6. Every check before the first byte is written.
        try begin("Preflight: identity, bytes, whole function, instruction boundaries, vCPU program counters")
        let journal = try journalForRun()
        let engine = PatchEngine(target: target, targetName: "lab", symbols: symbols, journal: journal)
        self.engine = engine
        let bundle = try HandPatch(target: target, symbols: symbols, reference: reference).flip(at: place.address)
        say(bundle.description ?? "")
        let dryRun: PatchEngine.ApplyResult
        do {
            dryRun = try engine.apply(bundle, dryRun: true)
        } catch let PatchError.refused(findings) {
            report(.output(Self.findings(findings)))
            throw fail(expected: "every preflight check to pass", found: "refused")
        }
        report(.output(Self.findings(dryRun.preflight.findings)))
        let checked = Set(dryRun.preflight.findings.filter(\.passed).map(\.check))
        let wanted: [PreflightCheck] = [.identity, .bytes, .function, .boundaries, .busy]
        guard wanted.allSatisfy(checked.contains) else {
            throw fail(expected: "passed checks " + wanted.map(\.rawValue).joined(separator: ", "),
                       found: checked.map(\.rawValue).sorted().joined(separator: ", "))
        }
        check("all \(wanted.count) checks passed; nothing written yet")

        // 7. The write: stop both vCPUs, write one byte, read it back, resume.
        try begin("Apply: je → jne at nfs_flock+0x2f (74 → 75), the vCPUs stopped for the write")
        let applied = try engine.apply(bundle)
        appliedID = applied.bundleID
        report(.output(applied.hunks.map { "\($0.location)  \(Hex.address($0.address))  \(Hex.bytes($0.original)) → \(Hex.bytes($0.replacement))\n" }.joined()))
        let pause = applied.pause.map { String(format: "%.0f µs", $0.microseconds) } ?? "not stopped"
        let now = try target.read(at: place.address, count: 2)
        guard now == [0x75, 0x39] else { throw fail(expected: "75 39 live at \(Hex.address(place.address))", found: Hex.bytes(now)) }
        check("applied \(applied.bundleID); the kernel was paused for \(pause) (busy check attempt \(applied.attempts))")

        // 8. The new behaviour on NFS, and nothing else changed.
        try begin("flock() on NFS now fails with ENOLCK; flock() on tmpfs still works")
        try expectFlock(on: Demo.nfsFile, ok: false)
        try expectFlock(on: Demo.tmpfsFile, ok: true)

        // 9. Undo.
        try begin("Revert: put back the original byte")
        let reverted = try engine.revert(id: applied.bundleID)
        appliedID = nil
        report(.output(reverted.hunks.map { "\($0.location)  \(Hex.address($0.address))  \(Hex.bytes($0.replacement)) → \(Hex.bytes($0.original))\n" }.joined()))
        check("reverted; paused for \(reverted.pause.map { String(format: "%.0f µs", $0.microseconds) } ?? "nothing")")

        // 10. Back to the start.
        try begin("flock() on NFS works again")
        try expectFlock(on: Demo.nfsFile, ok: true)

        // 11. What the journal and the live bytes say.
        try begin("suture status: the journal and the live bytes agree that the patch is reverted")
        let statuses = try engine.status()
        report(.output(statuses.map { "\($0.record.id)  \($0.live.rawValue)  \($0.detail)\n" }.joined()))
        guard let mine = statuses.last(where: { $0.record.id == applied.bundleID }), mine.live == .reverted,
              mine.record.state == .reverted else {
            throw fail(expected: "\(applied.bundleID) reverted in the journal and live",
                       found: statuses.map { "\($0.record.id) journal \($0.record.state.rawValue), live \($0.live.rawValue)" }.joined(separator: "; "))
        }
        check("\(applied.bundleID): reverted (journal \(journal.directory))")

        // 12. Leave the lab as found.
        try begin(bootedLab ? "Bring the lab down (the demo booted it)" : "Leave the lab up (it was up before the demo)")
        target.close()
        self.target = nil
        lease = nil
        if bootedLab {
            guard try vm.down() else { throw fail(expected: "the demo's QEMU to stop", found: "no QEMU of ours running") }
            bootedLab = false
            check("lab stopped")
        } else {
            check("lab still up: QEMU pid \(state.qemu.pid), gdbstub \(state.gdbAddress)")
        }
        end()
        return DemoSummary(seconds: Date().timeIntervalSince(started), bootedLab: stateWasBooted,
                           applyPause: applied.pause, revertPause: reverted.pause, liveAddress: place.address,
                           steps: stepTimes)
    }

    /// Set once the demo booted the lab; survives `bootedLab` being cleared by the orderly down.
    private var stateWasBooted = false

    // MARK: Step helpers

    private mutating func begin(_ title: String) throws {
        end()
        stepNumber += 1
        stepTitle = title
        if options.isCancelled() {
            var stop = fail(expected: "to go on", found: "an interrupt")
            stop.interrupted = true
            throw stop
        }
        stepStarted = Date()
        report(.step(number: stepNumber, total: Self.total, title: title))
    }

    private mutating func end() {
        guard stepNumber > 0, stepTimes.count < stepNumber else { return }
        stepTimes.append(DemoStepTime(title: stepTitle, seconds: Date().timeIntervalSince(stepStarted)))
    }

    private func say(_ text: String) { report(.say(text)) }
    private func check(_ text: String) { report(.check(text)) }

    private func fail(expected: String, found: String) -> DemoFailure {
        DemoFailure(step: "\(stepNumber). \(stepTitle)", expected: expected, found: found)
    }

    private mutating func bootOrReuse() throws -> LabState {
        switch try vm.status() {
        case .up(let state) where state.nfs:
            say("reusing the lab already up in \(vm.paths.runFolder) (QEMU pid \(state.qemu.pid), gdbstub \(state.gdbAddress)); it stays up")
            check("lab up with NFS on /mnt/nfs")
            return state
        case .up(let state):
            throw fail(expected: "no lab, or one booted with --nfs",
                       found: "a lab without NFS (QEMU pid \(state.qemu.pid)); run `suture lab down`, then `suture demo` boots its own")
        case .booting(let state):
            throw fail(expected: "no lab, or one that is up", found: "a lab still booting (QEMU pid \(state.qemu.pid))")
        case .down:
            say("no lab is up in \(vm.paths.runFolder): booting one (and bringing it down at the end)")
            let report = self.report
            let state = try vm.up(options.boot) { line in report(.output(line + "\n")) }
            bootedLab = true
            stateWasBooted = true
            check(String(format: "shell after %.1f s, NFS mounted on /mnt/nfs after %.1f s more (KASLR %@)",
                         state.bootSeconds ?? 0, state.nfsSeconds ?? 0, state.kaslr ? "on" : "off"))
            return state
        }
    }

    /// Runs flocktest on `file`; `ok` expects "flock: OK", else "No locks available (errno 37)".
    private func expectFlock(on file: String, ok: Bool) throws {
        let command = "flocktest \(file)"
        report(.command(command))
        let result = try vm.exec(command, timeout: 30)
        report(.output(result.output + (result.status == 0 ? "" : "(exit status \(result.status))\n")))
        if ok {
            guard result.status == 0, result.output == "flock: OK\n" else {
                throw fail(expected: "\"flock: OK\" and exit status 0 from `\(command)`",
                           found: "\"\(result.output.trimmingCharacters(in: .newlines))\", exit status \(result.status)")
            }
            check("flock: OK")
        } else {
            guard result.status == 1, result.output.contains("No locks available"), result.output.contains("(errno 37)") else {
                throw fail(expected: "\"flock: No locks available (errno 37)\" and exit status 1 from `\(command)`",
                           found: "\"\(result.output.trimmingCharacters(in: .newlines))\", exit status \(result.status)")
            }
            check("ENOLCK (errno 37), as the article's patched kernel answers flock() on NFS")
        }
    }

    private mutating func journalForRun() throws -> Journal {
        let environment = ProcessInfo.processInfo.environment["SUTURE_STATE_DIR"].flatMap { $0.isEmpty ? nil : $0 }
        if let directory = options.journalDirectory ?? environment {
            say("journal: \(directory)")
            return Journal(directory: directory)
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("suture-demo-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        privateJournal = directory
        say("journal: \(directory) (private to this run; set SUTURE_STATE_DIR to keep it)")
        return Journal(directory: directory)
    }

    /// Undoes what the demo did, after a failure: revert the patch, release the gdbstub, bring down
    /// a lab the demo booted. Returns a line per action.
    private mutating func cleanUp() -> [String] {
        var done: [String] = []
        var keepJournal = false
        if let id = appliedID, let engine {
            do {
                let result = try engine.revert(id: id)
                done.append("reverted \(id) (\(result.hunks.map { "\($0.location) back to \(Hex.bytes($0.original))" }.joined(separator: ", ")))")
            } catch {
                keepJournal = true
                done.append("could not revert \(id): \(error); run `suture recover -t lab --state-dir \(engine.journal.directory)`")
            }
            appliedID = nil
        }
        target?.close()
        target = nil
        lease = nil
        if bootedLab {
            do {
                _ = try vm.down()
                done.append("lab brought down (the demo had booted it)")
            } catch {
                done.append("could not bring the lab down: \(error)")
            }
            bootedLab = false
        }
        if let privateJournal {
            // Only a failed revert needs the journal (for `suture recover`).
            if keepJournal { done.append("journal kept in \(privateJournal)") }
            else { try? FileManager.default.removeItem(atPath: privateJournal) }
        }
        for line in done { report(.cleanup(line)) }
        return done
    }

    // MARK: Formatting

    /// kallsyms lines `ADDRESS t NAME\t[MODULE]` for `name`.
    static func lines(in text: [UInt8], endingWith suffix: String, name: String) -> [String] {
        let needle = " \(name)\(suffix)"
        var found: [String] = []
        for line in String(decoding: text, as: UTF8.self).split(separator: "\n") where line.hasSuffix(needle) {
            found.append(String(line))
        }
        return found
    }

    /// An objdump-style listing from the function's start through the instruction after `mark`,
    /// with the instruction at `mark` pointed at.
    private func listing(_ instructions: [Instruction], upTo mark: UInt64, name: String, start: UInt64, size: Int,
                         annotations: [UInt64: [String]], symbols: SymbolIndex? = nil) -> String {
        let shown = Array(instructions.prefix { $0.address <= mark + 2 })
        let text = Listing(instructions: shown, symbolize: { address in
            if address >= start, address < start + UInt64(size) { return "\(name)+\(Hex.address(address - start))" }
            // Live code: other functions by their kallsyms names (nfs_flock.cold, nfs_debug).
            return symbols?.symbolize(address).map { $0.offset == 0 ? $0.symbol.name : "\($0.symbol.name)+\(Hex.address($0.offset))" }
        }, annotations: annotations.filter { $0.key < (shown.last?.endAddress ?? start) }).render()
        let markLabel = String(mark, radix: 16) + ":"
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if let i = lines.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix(markLabel) }) {
            lines[i] += "   ◀ \(name)+\(Hex.address(mark - start))"
        }
        let rest = instructions.count - shown.count
        if rest > 0 { lines.insert("\t... \(rest) more instructions", at: lines.count - 1) }
        return "\(Hex.padded(start)) <\(name)>:\n" + lines.joined(separator: "\n")
    }

    /// Relocations applying to the function's bytes, objdump -r style, keyed by section offset.
    private func relocationNotes(_ reference: ReferenceObject, _ function: ReferenceFunction) throws -> [UInt64: [String]] {
        var notes: [UInt64: [String]] = [:]
        let end = function.offset + UInt64(function.size)
        for r in try reference.file.relocations(applyingTo: function.section) where r.offset >= function.offset && r.offset < end {
            let addend = r.addend == 0 ? "" : (r.addend > 0 ? "+" : "-") + Hex.address(r.addend.magnitude)
            notes[r.offset, default: []].append("\(r.typeName)\t\(r.symbolName)\(addend)")
        }
        return notes
    }

    /// One line per run of bytes where the live function differs from the file: the site that
    /// explains it (a table's site rather than the relocation inside it), or "unexplained".
    private func differences(_ function: ReferenceFunction, live: [UInt8]) -> String {
        var lines: [String] = []
        let count = min(function.size, live.count)
        var i = 0
        while i < count {
            guard live[i] != function.bytes[i] else { i += 1; continue }
            var to = i + 1
            var why = "unexplained"
            if let site = function.explanation(at: UInt64(i)) {
                to = min(Int(site.offset) + site.length - Int(function.offset), count)
                why = "\(site.table): \(site.table.meaning)"
            }
            let at = "+" + Hex.address(UInt64(i))
            lines.append("\(at.padding(toLength: 6, withPad: " ", startingAt: 0)) nfs.ko \(Hex.bytes(function.bytes[i..<to]).padding(toLength: 14, withPad: " ", startingAt: 0))"
                         + "  live \(Hex.bytes(live[i..<to]).padding(toLength: 14, withPad: " ", startingAt: 0))  \(why)")
            i = to
        }
        return lines.isEmpty ? "  (no byte differs)\n" : lines.joined(separator: "\n") + "\n"
    }

    static func findings(_ findings: [PreflightFinding]) -> String {
        findings.map { f in
            "  \(f.passed ? "✓" : (f.forced ? "!" : "✗")) \(f.check.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)) \(f.detail)\n"
        }.joined()
    }
}
