import Foundation
import ELF
import Symbols
import Disassembly
import Targets

/// Applies, reverts and recovers patches on one target, journaling every write.
///
/// Ordering, and why:
/// 1. Preflight reads and checks everything without stopping the target, so a refusal costs the
///    target nothing.
/// 2. The intent goes to the journal (fsynced) before the target is stopped: if Suture dies at any
///    later point, `recover` knows exactly which bytes may have changed and what they were.
/// 3. Stop the world, then look at every program counter; if one is inside a hunk, resume and try
///    again a little later (Ksplice's CODE_BUSY), since holding a kernel stopped while waiting would
///    itself be the outage.
/// 4. In the same stop, re-read each hunk (preflight's bytes may be stale) and check them all before
///    the first write. Then write only the changed bytes and read them back. Any failure puts back
///    the bytes this stop found before resuming.
/// 5. Resume, then journal the completion. The pause window is measured from stop to resume.
public struct PatchEngine {
    public let target: MemoryTarget
    /// How the user named the target (`lab`, `pid:42`): the journal's key.
    public let targetName: String
    public let symbols: SymbolIndex?
    public let journal: Journal
    public let architecture: Architecture
    /// Fault injection for the crash-recovery tests: sleep this long (µs) after each hunk's write,
    /// so a test can kill Suture between two writes. Zero in normal use.
    public var delayAfterEachHunkMicroseconds: UInt32 = 0

    public init(target: MemoryTarget, targetName: String, symbols: SymbolIndex?, journal: Journal,
                architecture: Architecture = .x86_64) {
        self.target = target
        self.targetName = targetName
        self.symbols = symbols
        self.journal = journal
        self.architecture = architecture
    }

    // MARK: Apply

    public struct ApplyResult: Sendable {
        public var bundleID: String
        public var preflight: PreflightReport
        public var hunks: [AppliedHunk]
        /// Time the target was stopped for the write (nil when it could not be stopped).
        public var pause: PauseWindow?
        /// How many stop attempts the busy check needed.
        public var attempts: Int
        public var dryRun: Bool
    }

    /// Checks and, unless `dryRun`, writes `bundle`. Throws `PatchError.refused` with every finding
    /// when a check fails; the target is then untouched.
    public func apply(_ bundle: PatchBundle, options: PreflightOptions = PreflightOptions(), dryRun: Bool = false) throws -> ApplyResult {
        let arch = bundle.architecture.flatMap(Architecture.init(rawValue:)) ?? architecture
        let resolved = try bundle.hunks.map { try ResolvedHunk.resolve($0, symbols: symbols, target: target) }
        return try journal.withLock {
            try refuseIfInterrupted()
            let applied = try journal.patches(target: targetName).filter { $0.state == .applied }
            if applied.contains(where: { $0.id == bundle.id }) {
                throw PatchError.wrongState(id: bundle.id, state: .applied, wanted: "apply it again")
            }
            // Stacking a patch on bytes another one owns would make either revert restore the wrong bytes.
            for h in resolved {
                for other in applied {
                    if let clash = other.hunks.first(where: { $0.address < h.range.upperBound && h.range.lowerBound < $0.address + UInt64($0.replacement.count) }) {
                        throw PatchError.overlaps(location: h.hunk.location, patch: other.id, other: clash.location)
                    }
                }
            }
            var report = try Preflight(target: target, architecture: arch, options: options)
                .run(bundle: bundle, hunks: resolved, symbols: symbols)
            let hunks = zip(resolved, report.live).map { h, live in
                AppliedHunk(location: h.hunk.location, address: h.address, original: live,
                            replacement: Self.effectiveReplacement(h.hunk, live: live))
            }
            guard report.passed else { throw PatchError.refused(report.findings) }
            if dryRun {
                // A dry run still looks at the program counters when it can, without writing.
                if target.capabilities.contains(.stop) {
                    let (finding, attempts, _, _) = try stopWhenIdle(resolved, spans: report.spansInstructions, options: options)
                    try target.resume()
                    report.findings.append(finding)
                    if !finding.passed && !finding.forced { throw PatchError.refused(report.findings) }
                    return ApplyResult(bundleID: bundle.id, preflight: report, hunks: hunks, pause: nil, attempts: attempts, dryRun: true)
                }
                return ApplyResult(bundleID: bundle.id, preflight: report, hunks: hunks, pause: nil, attempts: 0, dryRun: true)
            }
            let identity = try? target.identity()
            try record(.applyIntent, id: bundle.id, identity: identity, description: bundle.description, hunks: hunks)
            do {
                let (pause, attempts, busy) = try write(hunks, resolved: resolved, spans: report.spansInstructions,
                                                         from: \.original, to: \.replacement, options: options)
                report.findings.append(busy)
                try record(.applyDone, id: bundle.id, identity: identity, description: bundle.description, hunks: hunks,
                           pause: pause?.microseconds)
                return ApplyResult(bundleID: bundle.id, preflight: report, hunks: hunks, pause: pause, attempts: attempts, dryRun: false)
            } catch let error as WriteFailure {
                try finish(error, id: bundle.id, abortEvent: .applyAborted, findings: report.findings)
            }
        }
    }

    /// What the hunk's bytes become on this target: the replacement where it differs from the
    /// expected bytes, and the live bytes everywhere else. Bytes a hunk does not change may be ones
    /// the target rewrote at load time (relocations, ftrace NOPs), whose file placeholders in
    /// `replacement` must never be written back.
    static func effectiveReplacement(_ hunk: Hunk, live: [UInt8]) -> [UInt8] {
        var bytes = live
        for i in bytes.indices where i < hunk.expected.count && hunk.expected[i] != hunk.replacement[i] {
            bytes[i] = hunk.replacement[i]
        }
        return bytes
    }

    // MARK: Revert

    public struct RevertResult: Sendable {
        public var patchID: String
        public var hunks: [AppliedHunk]
        public var pause: PauseWindow?
        public var dryRun: Bool
    }

    /// Puts back the original bytes of an applied patch. Refuses when the live bytes are no longer
    /// what Suture wrote (drift), unless `force`.
    public func revert(id: String, force: Bool = false, options: PreflightOptions = PreflightOptions(), dryRun: Bool = false) throws -> RevertResult {
        try journal.withLock {
            try refuseIfInterrupted()
            guard let patch = try journal.patches(target: targetName).last(where: { $0.id == id }) else {
                throw PatchError.notInJournal(id: id, target: targetName)
            }
            guard patch.state == .applied else { throw PatchError.wrongState(id: id, state: patch.state, wanted: "revert it") }
            let resolved = patch.hunks.map {
                ResolvedHunk(hunk: Hunk(symbol: nil, offset: 0, address: $0.address, expected: $0.replacement, replacement: $0.original),
                             address: $0.address, function: symbols?.function(containing: $0.address))
            }
            // The hunks and their functions in one read (one short stop of a VM).
            let memory = try PrefetchedMemory(target: target, ranges: Preflight.hunkAndFunctionRanges(resolved))
            for h in patch.hunks {
                let live = try memory.read(at: h.address, count: h.replacement.count)
                if live != h.replacement && !force {
                    throw PatchError.drifted(id: id, location: h.location, address: h.address, expected: h.replacement, found: live)
                }
            }
            // As for apply: a one-instruction hunk is guarded by its own bytes (else a thread
            // living in the function, a daemon's event loop, would block the revert forever);
            // several instructions, several hunks in a function, or anything unclear, the function.
            let spans = (try? BoundaryCheck(hunks: resolved, architecture: architecture,
                                            placement: HunkPlacementClassifier(target: target, symbols: symbols)).run(on: memory).spans)
                ?? resolved.map { _ in true }
            if dryRun { return RevertResult(patchID: id, hunks: patch.hunks, pause: nil, dryRun: true) }
            try record(.revertIntent, id: id, identity: patch.identity, description: patch.description, hunks: patch.hunks)
            do {
                let (pause, _, _) = try write(patch.hunks, resolved: resolved, spans: spans, from: \.replacement, to: \.original,
                                              options: options, checkFrom: !force)
                try record(.revertDone, id: id, identity: patch.identity, description: patch.description, hunks: patch.hunks,
                           pause: pause?.microseconds)
                return RevertResult(patchID: id, hunks: patch.hunks, pause: pause, dryRun: false)
            } catch let error as WriteFailure {
                try finish(error, id: id, abortEvent: .revertAborted, findings: [])
            }
        }
    }

    /// Every patch the journal shows as applied on this target, newest first.
    public func appliedPatchIDs() throws -> [String] {
        try journal.patches(target: targetName).filter { $0.state == .applied }.map(\.id).reversed()
    }

    // MARK: Status

    public struct PatchStatus: Sendable {
        public enum Live: String, Sendable {
            /// Every hunk holds the replacement bytes.
            case applied
            /// Every hunk holds the original bytes.
            case reverted
            /// Neither: something else changed the bytes, or the target was rebooted at another address.
            case drifted
            /// The bytes could not be read.
            case unreadable
        }
        public var record: PatchRecord
        public var live: Live
        public var detail: String
    }

    /// The journal's patches on this target, each checked against the live bytes.
    public func status() throws -> [PatchStatus] {
        try journal.patches(target: targetName).map { patch in
            var applied = true, reverted = true
            var details: [String] = []
            for h in patch.hunks {
                guard let live = try? target.read(at: h.address, count: h.replacement.count) else {
                    return PatchStatus(record: patch, live: .unreadable, detail: "\(h.location) (\(Hex.address(h.address))) cannot be read")
                }
                if live != h.replacement { applied = false }
                if live != h.original { reverted = false }
                details.append("\(h.location) = \(Hex.bytes(live))")
            }
            let live: PatchStatus.Live = applied ? .applied : (reverted ? .reverted : .drifted)
            return PatchStatus(record: patch, live: live, detail: details.joined(separator: ", "))
        }
    }

    // MARK: Recover

    public struct RecoverResult: Sendable {
        public var patchID: String
        public var outcome: JournalRecord.Event
        public var rewritten: Int
    }

    /// Finishes operations that an earlier Suture left half done (killed between intent and
    /// completion). An interrupted apply is rolled back (or forward with `forward`); an interrupted
    /// revert is finished. Decided per hunk from the live bytes; a hunk holding neither the old nor
    /// the new bytes is drift and stops recovery.
    public func recover(forward: Bool = false, options: PreflightOptions = PreflightOptions()) throws -> [RecoverResult] {
        try journal.withLock {
            var results: [RecoverResult] = []
            for patch in try journal.patches(target: targetName) where patch.state.isInterrupted {
                let toApplied = patch.state == .applying && forward
                var pending: [AppliedHunk] = []
                for h in patch.hunks {
                    let live = try target.read(at: h.address, count: h.original.count)
                    let wanted = toApplied ? h.replacement : h.original
                    let other = toApplied ? h.original : h.replacement
                    if live == wanted { continue }
                    guard live == other else {
                        throw PatchError.drifted(id: patch.id, location: h.location, address: h.address, expected: other, found: live)
                    }
                    pending.append(h)
                }
                if !pending.isEmpty {
                    let resolved = pending.map {
                        ResolvedHunk(hunk: Hunk(symbol: nil, offset: 0, address: $0.address,
                                                expected: toApplied ? $0.original : $0.replacement,
                                                replacement: toApplied ? $0.replacement : $0.original),
                                     address: $0.address, function: symbols?.function(containing: $0.address))
                    }
                    _ = try write(pending, resolved: resolved, spans: resolved.map { _ in true },
                                  from: toApplied ? \.original : \.replacement, to: toApplied ? \.replacement : \.original,
                                  options: options)
                }
                let event: JournalRecord.Event = toApplied ? .recoveredApplied : .recoveredReverted
                try record(event, id: patch.id, identity: patch.identity, description: patch.description, hunks: patch.hunks,
                           note: "\(patch.state.rawValue) was interrupted; \(pending.count) of \(patch.hunks.count) hunks rewritten")
                results.append(RecoverResult(patchID: patch.id, outcome: event, rewritten: pending.count))
            }
            return results
        }
    }

    // MARK: The write itself

    /// A failure inside the stopped window, with what the rollback achieved.
    struct WriteFailure: Error {
        var underlying: Error
        /// True when every hunk holds its `from` bytes again (or none was touched).
        var restored: Bool
    }

    private func finish(_ failure: WriteFailure, id: String, abortEvent: JournalRecord.Event, findings: [PreflightFinding]) throws -> Never {
        if failure.restored {
            try record(abortEvent, id: id, identity: nil, hunks: [], note: "\(failure.underlying)")
            if let refused = failure.underlying as? PatchError { throw refused }
            throw failure.underlying
        }
        // A process that exited took its memory, and any half-written patch, with it: nothing is
        // left for recover, so the journal closes the operation now.
        if let gone = failure.underlying as? TargetError, gone.isProcessGone {
            try record(abortEvent, id: id, identity: nil, hunks: [], note: "the process exited during the write: \(gone)")
            throw gone
        }
        // Leave the intent as the last word: recover will sort it out from the live bytes.
        throw PatchError.partialWrite(id: id, underlying: "\(failure.underlying)")
    }

    /// Stops the target (when it can) once no context is busy in the hunks, re-reads the hunks in
    /// the same stop, writes the changed bytes of every hunk and reads them back, and resumes.
    private func write(_ hunks: [AppliedHunk], resolved: [ResolvedHunk], spans: [Bool],
                       from: KeyPath<AppliedHunk, [UInt8]>, to: KeyPath<AppliedHunk, [UInt8]>,
                       options: PreflightOptions, checkFrom: Bool = true) throws -> (PauseWindow?, Int, PreflightFinding) {
        let canStop = target.capabilities.contains(.stop)
        let swaps = !canStop && target.capabilities.contains(.compareAndSwap)
        let ranges = hunks.map { $0.address..<($0.address + UInt64($0[keyPath: from].count)) }
        var busy = PreflightFinding(check: .busy, passed: true,
                                    detail: swaps ? "checked by the target inside its compare-and-swap (every task's stack)"
                                                  : "target cannot be stopped: single atomic store")
        var attempts = 0
        var clock = PauseWindow.Stopwatch()
        var live: [[UInt8]] = []
        if canStop {
            do {
                (busy, attempts, clock, live) = try stopWhenIdle(resolved, spans: spans, options: options, reading: ranges)
            } catch { throw WriteFailure(underlying: error, restored: true) }
            guard busy.passed || busy.forced else {
                try? target.resume()
                throw WriteFailure(underlying: PatchError.refused([busy]), restored: true)
            }
        }
        var written: [Int] = []
        do {
            if !canStop { live = try ranges.map { try target.read(at: $0.lowerBound, count: $0.count) } }
            // Every check before the first write: bytes may have changed since preflight read them.
            var blocks: [(hunk: Int, block: MemoryBlock)] = []
            for (i, h) in hunks.enumerated() {
                let old = h[keyPath: from], new = h[keyPath: to]
                if checkFrom && live[i] != old {
                    throw PatchError.drifted(id: "-", location: h.location, address: h.address, expected: old, found: live[i])
                }
                guard let first = old.indices.first(where: { old[$0] != new[$0] }),
                      let last = old.indices.last(where: { old[$0] != new[$0] }) else { continue }
                // The expected bytes let a compare-and-swap target refuse a change made since this check.
                blocks.append((i, MemoryBlock(address: h.address + UInt64(first), bytes: Array(new[first...last]),
                                              expected: Array(live[i][first...last]))))
            }
            func verify(_ planned: [(hunk: Int, block: MemoryBlock)], _ back: [[UInt8]]) throws {
                for ((i, block), found) in zip(planned, back) where found != block.bytes {
                    let h = hunks[i]
                    var seen = live[i]
                    let offset = Int(block.address - h.address)
                    seen.replaceSubrange(offset..<offset + found.count, with: found)
                    throw PatchError.verifyFailed(location: h.location, address: h.address, wrote: h[keyPath: to], found: seen)
                }
            }
            if delayAfterEachHunkMicroseconds > 0 {
                // Fault injection: one hunk at a time, so a test can kill Suture between two writes.
                for planned in blocks {
                    written.append(planned.hunk)
                    try verify([planned], try target.write([planned.block]))
                    usleep(delayAfterEachHunkMicroseconds)
                }
            } else if swaps {
                // The target checks for tasks inside the range itself; busy means nothing was written.
                (busy, attempts) = try swapWhenIdle(blocks.map(\.block), options: options) { back in
                    written = blocks.map(\.hunk)
                    try verify(blocks, back)
                }
            } else {
                // One exchange for all hunks where the backend can (the pause window is round trips).
                written = blocks.map(\.hunk)
                try verify(blocks, try target.write(blocks.map(\.block)))
            }
        } catch {
            // Undo in reverse order while still stopped, so no CPU ever runs a partial patch: put
            // back exactly the bytes this stop found there.
            var restored = true
            for i in written.reversed() {
                do {
                    let back = try target.write([MemoryBlock(address: hunks[i].address, bytes: live[i])])
                    if back.first != live[i] { restored = false }
                } catch { restored = false }
            }
            if canStop { try? target.resume() }
            throw WriteFailure(underlying: error, restored: restored)
        }
        if canStop {
            do { try target.resume() } catch { throw WriteFailure(underlying: error, restored: false) }
        }
        return (canStop ? clock.stop() : nil, attempts, busy)
    }

    /// Writes through a compare-and-swap target, retrying with back-off while it answers busy (a
    /// task inside the range); after the last attempt, refuses with what the target said.
    private func swapWhenIdle(_ blocks: [MemoryBlock], options: PreflightOptions,
                              then verify: ([[UInt8]]) throws -> Void) throws -> (PreflightFinding, Int) {
        var delay = options.busyBackoffMicroseconds
        let attempts = max(1, options.busyAttempts)
        var last = ""
        for attempt in 1...attempts {
            do {
                try verify(try target.write(blocks))
                return (PreflightFinding(check: .busy, passed: true,
                                         detail: "no task inside the range, checked by the target inside its compare-and-swap (attempt \(attempt))"), attempt)
            } catch let TargetError.busy(_, _, detail) {
                last = detail
                if attempt < attempts { usleep(delay); delay = delay &* 2 }
            }
        }
        throw PatchError.refused([PreflightFinding(check: .busy, passed: false,
                                                   detail: "still executing inside the patched range after \(attempts) attempts: \(last)")])
    }

    /// Stops the target with no context inside a hunk (or inside the function, for hunks spanning
    /// several instructions), reading `ranges` in the same stop. Returns stopped on success; on
    /// refusal the target is resumed.
    func stopWhenIdle(_ hunks: [ResolvedHunk], spans: [Bool], options: PreflightOptions,
                      reading ranges: [Range<UInt64>] = []) throws -> (PreflightFinding, Int, PauseWindow.Stopwatch, [[UInt8]]) {
        var delay = options.busyBackoffMicroseconds
        var lastBusy: [String] = []
        let attempts = max(1, options.busyAttempts)
        for attempt in 1...attempts {
            let clock = PauseWindow.Stopwatch()
            let snapshot = try target.stop(reading: ranges)
            let contexts = snapshot.contexts
            lastBusy = []
            for context in contexts {
                for (h, spansMore) in zip(hunks, spans) {
                    let guarded: Range<UInt64>
                    if spansMore, let f = h.function, let size = f.size { guarded = f.address..<(f.address + size) }
                    else { guarded = h.range }
                    // Conservative: a PC anywhere in [start, end) counts, even one about to begin
                    // the first patched instruction (its fetch may already be under way on real CPUs).
                    let addresses = [context.programCounter] + context.returnAddresses
                    for pc in addresses where guarded.contains(pc) {
                        let where_ = symbols?.symbolize(pc).map { "\($0.symbol.name)+\(Hex.address($0.offset))" } ?? Hex.address(pc)
                        lastBusy.append("\(context.id) at \(where_)\(pc == context.programCounter ? "" : " (return address)")")
                    }
                }
            }
            if lastBusy.isEmpty {
                return (PreflightFinding(check: .busy, passed: true,
                                         detail: "\(contexts.count) CPU/thread PCs outside the hunks (attempt \(attempt))"), attempt, clock, snapshot.contents)
            }
            if options.force.contains(.busy) {
                return (PreflightFinding(check: .busy, passed: false, detail: "busy: " + lastBusy.joined(separator: ", "), forced: true),
                        attempt, clock, snapshot.contents)
            }
            try target.resume()
            if attempt < attempts { usleep(delay); delay = delay &* 2 }
        }
        return (PreflightFinding(check: .busy, passed: false,
                                 detail: "still executing inside the patched range after \(attempts) attempts: " + lastBusy.joined(separator: ", ")),
                attempts, PauseWindow.Stopwatch(), [])
    }

    private func refuseIfInterrupted() throws {
        let interrupted = try journal.patches(target: targetName).filter { $0.state.isInterrupted }
        guard interrupted.isEmpty else { throw PatchError.interrupted(ids: interrupted.map(\.id), target: targetName) }
    }

    private func record(_ event: JournalRecord.Event, id: String, identity: TargetIdentity?, description: String? = nil,
                        hunks: [AppliedHunk], pause: Double? = nil, note: String? = nil) throws {
        try journal.append(JournalRecord(sequence: try journal.nextSequence(), time: Date().timeIntervalSince1970,
                                         event: event, patchID: id, target: targetName, identity: identity,
                                         description: description, hunks: hunks, pauseMicroseconds: pause, note: note))
    }
}

/// How long a target was held stopped for one write, as the client saw it: from just before the
/// stop request left until the resume request had left.
public struct PauseWindow: Sendable, Hashable {
    public var microseconds: Double
    /// The window's bounds on the realtime clock (seconds since 1970), to match it with what the
    /// target itself recorded (QEMU's STOP/RESUME events carry realtime timestamps).
    public var startedAt: Double
    public var endedAt: Double

    public init(microseconds: Double, startedAt: Double = 0, endedAt: Double = 0) {
        self.microseconds = microseconds
        self.startedAt = startedAt
        self.endedAt = endedAt
    }

    /// The realtime clock in seconds since 1970, as `startedAt` and `endedAt` use it.
    public static func realtime() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    /// Started just before `stop()`; `stop()` on it gives the window.
    struct Stopwatch {
        let start = DispatchTime.now().uptimeNanoseconds
        let realStart = PauseWindow.realtime()
        func stop() -> PauseWindow {
            let end = DispatchTime.now().uptimeNanoseconds
            return PauseWindow(microseconds: Double(end - start) / 1000, startedAt: realStart, endedAt: PauseWindow.realtime())
        }
    }
}
