import Foundation
import ELF
import Patching
#if canImport(Glibc)
import Glibc
#endif

/// The lab: the pinned Debian kernel booted under QEMU (TCG) with its console, gdbstub, QMP and
/// a bulk channel, driven across processes through a state file in the run folder.
///
/// A value of this type holds no resources: `up` starts QEMU in its own session and records it,
/// later calls (from the same or another process) find it through the state file.
public struct LabVM: Sendable {
    public let paths: LabPaths

    public init(paths: LabPaths = LabPaths()) {
        self.paths = paths
    }

    // MARK: up

    /// Boots the VM and waits for its shell (and, with `nfs`, for the NFS mount).
    ///
    /// On any failure QEMU is stopped and the state removed before the error is thrown; the error
    /// carries QEMU's own output and the console's last lines.
    @discardableResult
    public func up(_ options: LabOptions = LabOptions(), progress: LabProgress = { _ in }) throws(LabError) -> LabState {
        try up(options, progress: progress, pickPort: SocketConnection.freeLoopbackPort)
    }

    /// `pickPort` chooses each attempt's gdbstub port (tests hand out a taken one first).
    func up(_ options: LabOptions, progress: LabProgress,
            pickPort: () throws(LabError) -> UInt16) throws(LabError) -> LabState {
        try Files.createDirectory(paths.runFolder)
        let lock = try FileLock(paths.runLock, throwing: LabError.self)
        defer { withExtendedLifetime(lock) {} }

        if let state = try readState() {
            if state.qemu.isRunning {
                throw .alreadyUp(pid: state.qemu.pid, gdbPort: state.gdbPort, runFolder: paths.runFolder)
            }
            state.qemu.reapIfChild()
            removeRunFiles()
        }
        guard let qemu = HostTool.find(options.qemu) else {
            throw .toolMissing(tool: options.qemu, package: "qemu-system-x86")
        }
        var image: LabImage
        if let given = options.image {
            image = given
        } else {
            image = try Ingredients(paths: paths).fetch(progress: progress)
        }
        if !options.extraFiles.isEmpty {
            image = try withExtraFiles(image, options.extraFiles)
        }

        // The port was free when we looked; if something takes it before QEMU binds it, QEMU
        // exits and we try a fresh one.
        let attempts = 4
        var lastPort: UInt16 = 0
        for _ in 0..<attempts {
            lastPort = try pickPort()
            if let state = try boot(qemu: qemu, image: image, options: options, gdbPort: lastPort, progress: progress) {
                return state
            }
            progress("gdbstub port \(lastPort) was taken; trying another")
        }
        throw .portInUse(port: lastPort, attempts: attempts)
    }

    /// One boot attempt; nil when QEMU could not bind the gdbstub port.
    private func boot(qemu: String, image: LabImage, options: LabOptions, gdbPort: UInt16,
                      progress: LabProgress) throws(LabError) -> LabState? {
        removeRunFiles()
        let kaslr = options.kaslr ?? true
        let arguments = qemuArguments(image: image, options: options, gdbPort: gdbPort)
        progress("starting QEMU (TCG, \(options.smp) CPUs, \(options.memoryMB) MB, KASLR \(kaslr ? "on" : "off"), "
                 + "gdbstub 127.0.0.1:\(gdbPort))")
        let started = Date()
        let pid = try DetachedProcess.spawn(qemu, arguments, outputFile: paths.qemuOutput)
        // Our child stays in /proc (as a zombie at worst) until reaped, so this cannot miss it.
        let identity = ProcessIdentity.of(pid: pid) ?? ProcessIdentity(pid: pid, startTime: 0)
        var state = LabState(phase: .booting, qemu: identity, gdbPort: gdbPort, serialSocket: paths.serialSocket,
                             serialLog: paths.serialLog, qmpSocket: paths.qmpSocket, bulkFile: paths.bulkFile,
                             kaslr: kaslr, smp: options.smp, memoryMB: options.memoryMB, nfs: options.nfs,
                             kernel: image.kernel, initramfs: image.initramfs,
                             // Whole seconds: the state file's ISO 8601 dates keep no fraction.
                             startedAt: Date(timeIntervalSince1970: started.timeIntervalSince1970.rounded(.down)))
        do {
            try writeState(state)
            // wait=on: QEMU does not start the guest before this connection, so no output is lost.
            let connection = try SocketConnection.connectUnix(paths.serialSocket, timeout: 30,
                                                              keepTrying: { identity.isRunning })
            let console = SerialConsole(connection: connection)
            let ready = try console.waitForReady(timeout: options.bootTimeout)
            _ = try console.exec("true", timeout: 30)   // the shell reads commands, not just /init
            state.bootID = ready.bootID
            state.guestUptime = ready.uptime
            state.bootSeconds = Date().timeIntervalSince(started)
            progress(String(format: "guest shell ready in %.1f s (guest uptime %.2f s)", state.bootSeconds!, ready.uptime))
            if options.nfs {
                let nfsStarted = Date()
                progress("setting up NFS in the guest (modules, rpcbind, nfsd, mount 127.0.0.1:/export on /mnt/nfs)")
                let result = try console.exec("/suture/nfs-setup 2>&1", timeout: options.nfsTimeout)
                guard result.status == 0, result.output.contains(GuestFiles.nfsReadyMarker) else {
                    throw LabError.nfsSetupFailed(status: result.status, output: result.output)
                }
                state.nfsSeconds = Date().timeIntervalSince(nfsStarted)
                progress(String(format: "NFS mounted on /mnt/nfs in %.1f s", state.nfsSeconds!))
            }
            state.phase = .up
            try writeState(state)
            return state
        } catch {
            let failure = error as? LabError ?? .io(path: paths.runFolder, operation: "boot", errno: EIO)
            // A console that closed means QEMU is on its way out: give it a moment to finish, so
            // its exit status and last words are there to report.
            var closed = false
            if case .consoleClosed = failure { closed = true }
            let ended = identity.waitForEnd(timeout: closed ? 5 : 0)
            let exited = ended != nil
            let status = ended ?? "stopped by suture"
            if !exited { stop(identity, timeout: 5) }
            removeFile(paths.stateFile)
            // QEMU's note that it waits for the console client (wait=on) is no news.
            let qemuOutput = ((try? Files.readText(paths.qemuOutput)) ?? "").split(separator: "\n")
                .filter { !$0.contains("QEMU waiting for connection") }.joined(separator: "\n")
            if exited, qemuOutput.contains("tcp:127.0.0.1:\(gdbPort)"), qemuOutput.contains("in use") {
                return nil
            }
            throw classify(failure, qemuExited: exited, exitStatus: status, qemuOutput: qemuOutput)
        }
    }

    /// Turns a console-level failure into the error a person needs: a panic, QEMU's own
    /// complaint, or a timeout, each with the console's last lines from the log.
    private func classify(_ failure: LabError, qemuExited: Bool, exitStatus: String,
                          qemuOutput: String) -> LabError {
        let tail = consoleTail()
        if tail.contains("Kernel panic") { return .guestPanic(consoleTail: tail) }
        switch failure {
        case .bootTimeout(let seconds, _):
            return .bootTimeout(seconds: seconds, consoleTail: tail)
        case .nfsSetupFailed, .commandTimeout, .commandTooLong, .toolMissing:
            return failure
        default:
            if qemuExited {
                return .qemuExited(status: exitStatus, qemuOutput: qemuOutput.isEmpty ? "(nothing)" : qemuOutput,
                                   consoleTail: tail.isEmpty ? "(nothing)" : tail)
            }
            return failure
        }
    }

    /// The initramfs followed by a gzip'd cpio of `files`, in the run folder. The kernel unpacks
    /// concatenated archives in order, so the extra files land on top of the shared image.
    private func withExtraFiles(_ image: LabImage, _ files: [LabExtraFile]) throws(LabError) -> LabImage {
        var archive = CpioArchive()
        for file in files {
            archive.addFile(file.guestPath, contents: try Files.read(file.hostPath), mode: file.mode)
        }
        archive.finish()
        let cpio = paths.runFolder + "/extra.cpio"
        let compressed = paths.runFolder + "/extra.cpio.gz"
        try Files.writeAtomically(cpio, archive.bytes)
        defer { Files.remove(cpio); Files.remove(compressed) }
        try HostTool.check("gzip", ["-1", "-n", "-c"], input: cpio, output: .stdoutFile(compressed), package: "gzip",
                           throwing: LabError.self)
        let combined = paths.runFolder + "/initramfs-extra.cpio.gz"
        try Files.writeAtomically(combined, try Files.read(image.initramfs) + Files.read(compressed))
        var result = image
        result.initramfs = combined
        return result
    }

    func qemuArguments(image: LabImage, options: LabOptions, gdbPort: UInt16) -> [String] {
        // QEMU option values use ',' as separator; a literal comma in a path is written ',,'.
        func escaped(_ path: String) -> String { path.replacingOccurrences(of: ",", with: ",,") }
        var append = "console=ttyS0 panic=-1 loglevel=4"
        if options.kaslr == false { append += " nokaslr" }
        for argument in options.kernelArguments { append += " " + argument }
        return [
            "-name", "suture-lab",
            "-accel", "tcg",
            "-m", "\(options.memoryMB)",
            "-smp", "\(options.smp)",
            "-kernel", image.kernel,
            "-initrd", image.initramfs,
            "-append", append,
            "-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none",
            "-chardev", "socket,id=ser0,path=\(escaped(paths.serialSocket)),server=on,wait=on,logfile=\(escaped(paths.serialLog))",
            "-serial", "chardev:ser0",
            "-qmp", "unix:\(escaped(paths.qmpSocket)),server=on,wait=off",
            // The bulk channel: a virtio console port written to a host file. append=on opens it
            // O_APPEND, so the host may truncate it before each transfer.
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", "file,id=bulk,path=\(escaped(paths.bulkFile)),append=on",
            "-device", "virtserialport,bus=vser0.0,chardev=bulk,name=\(GuestFiles.bulkPortName)",
            "-gdb", "tcp:127.0.0.1:\(gdbPort)",
        ]
    }

    // MARK: down, status

    /// Stops the VM this run folder started: QMP `quit`, then SIGTERM, then SIGKILL, each after a
    /// grace period. Returns false when no VM of ours was running. Only the recorded QEMU (same pid
    /// *and* start time, command `qemu-system-*`) is ever signalled.
    @discardableResult
    public func down(timeout: Double = 10) throws(LabError) -> Bool {
        guard Files.isDirectory(paths.runFolder) else { return false }
        let lock = try FileLock(paths.runLock, throwing: LabError.self)
        defer { withExtendedLifetime(lock) {} }
        guard let state = try readState() else { return false }
        defer { removeRunFiles() }
        guard state.qemu.isRunning, state.qemu.command?.hasPrefix("qemu-system") == true else {
            state.qemu.reapIfChild()
            return false
        }
        if let client = try? QMPClient(socketPath: state.qmpSocket) {
            _ = try? client.execute("quit")
        }
        if !state.qemu.waitForExit(timeout: timeout / 2) {
            stop(state.qemu, timeout: timeout / 2)
        }
        if state.qemu.isRunning { throw .stopFailed(pid: state.qemu.pid) }
        return true
    }

    /// SIGTERM, then SIGKILL; waits for the process to be gone (and reaps it if it is our child).
    private func stop(_ process: ProcessIdentity, timeout: Double) {
        if process.waitForExit(timeout: 0) { return }
        process.signal(SIGTERM)
        if process.waitForExit(timeout: timeout) { return }
        process.signal(SIGKILL)
        _ = process.waitForExit(timeout: 5)
    }

    /// Up, booting or down, judged by the recorded QEMU still being the same live process.
    public func status() throws(LabError) -> LabStatus {
        guard let state = try readState() else { return .down(stale: nil) }
        guard state.qemu.isRunning else { return .down(stale: state) }
        return state.phase == .up ? .up(state) : .booting(state)
    }

    func requireUp() throws(LabError) -> LabState {
        guard case .up(let state) = try status() else { throw .notUp(runFolder: paths.runFolder) }
        return state
    }

    // MARK: Console

    /// Runs a shell command in the guest; one console client at a time (a lock file in the run
    /// folder), each on a fresh connection.
    public func exec(_ command: String, timeout: Double = 60) throws(LabError) -> CommandResult {
        let state = try requireUp()
        let lock = try FileLock(paths.consoleLock, throwing: LabError.self)
        defer { withExtendedLifetime(lock) {} }
        let console = try SerialConsole(socketPath: state.serialSocket, timeout: 10)
        return try console.exec(command, timeout: timeout)
    }

    /// Release, build-id and command line of the running guest kernel.
    public func info(timeout: Double = 30) throws(LabError) -> LabInfo {
        let state = try requireUp()
        let result = try exec("uname -r; cat /proc/sys/kernel/random/boot_id; cat /proc/cmdline; "
                              + "od -An -v -tx1 /sys/kernel/notes", timeout: timeout)
        let lines = result.output.split(separator: "\n", maxSplits: 3, omittingEmptySubsequences: false)
        guard result.status == 0, lines.count == 4 else {
            throw .consoleProtocol(socket: state.serialSocket, expected: "uname -r, boot_id, cmdline and the notes in hex",
                                   found: result.output)
        }
        let notes = KernelNotes.parseOdHex(lines[3])
        guard let buildID = (try? Note.parse(notes, source: "/sys/kernel/notes"))?.first(where: \.isGNUBuildID)?.descriptor else {
            throw .consoleProtocol(socket: state.serialSocket, expected: "a GNU build-id note in /sys/kernel/notes",
                                   found: "\(notes.count) bytes without one")
        }
        return LabInfo(release: String(lines[0]), buildID: buildID, bootID: String(lines[1]),
                       commandLine: String(lines[2]))
    }

    // MARK: Bulk channel

    /// The guest's /proc/kallsyms, moved over the virtio bulk port (not the console), cached in
    /// the run folder per boot id and /proc/modules (loading a module changes kallsyms).
    public func kallsyms(timeout: Double = 120) throws(LabError) -> Kallsyms {
        let state = try requireUp()
        let lock = try FileLock(paths.consoleLock, throwing: LabError.self)
        defer { withExtendedLifetime(lock) {} }
        let console = try SerialConsole(socketPath: state.serialSocket, timeout: 10)

        // The port first: its drivers load on first use and change the module list. Then the key:
        // boot id and the loaded modules' names and addresses (not /proc/modules whole: its
        // reference counts change while a port is open).
        let probe = try console.exec("/suture/bulk-port && cat /proc/sys/kernel/random/boot_id && "
                                     + "cut -d' ' -f1,6 /proc/modules | md5sum", timeout: 30)
        let words = probe.output.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard probe.status == 0, words.count >= 3, words[0].hasPrefix("/dev/") else {
            throw .consoleProtocol(socket: state.serialSocket,
                                   expected: "the bulk port's device, boot_id and the md5 of the module list",
                                   found: "status \(probe.status): \(probe.output)")
        }
        let port = String(words[0])
        let bootID = String(words[1])
        let cache = paths.runFolder + "/kallsyms-\(bootID)-\(words[2].prefix(12)).txt"
        if Files.exists(cache) {
            return Kallsyms(path: cache, bootID: bootID, text: try Files.read(cache), cached: true)
        }

        // No other transfer runs (console lock), so the file holds only what this one sends.
        guard truncate(paths.bulkFile, 0) == 0 else { throw .io(path: paths.bulkFile, operation: "truncate", errno: errno) }
        let nonce = String(UInt64.random(in: 1...UInt64.max), radix: 16)
        let terminator = Array("SUTURE-BULK-END-\(nonce)\n".utf8)
        let command = "{ cat /proc/kallsyms; echo \"SUTURE-BULK-END\"\"-\(nonce)\"; } > \(port)"
        let sent = try console.exec(command, timeout: timeout)
        guard sent.status == 0 else {
            throw .consoleProtocol(socket: state.serialSocket, expected: "status 0 from the bulk transfer",
                                   found: "status \(sent.status): \(sent.output)")
        }
        // The guest's write returns when virtio took the data; QEMU may still be writing the file.
        let deadline = Date().addingTimeInterval(30)
        while !fileEnds(paths.bulkFile, with: terminator) {
            if Date() >= deadline {
                throw .bulkTimeout(file: paths.bulkFile, terminator: String(decoding: terminator.dropLast(), as: UTF8.self),
                                   seconds: 30, received: Int(Files.size(paths.bulkFile) ?? 0))
            }
            usleep(5_000)
        }
        var text = try Files.read(paths.bulkFile)
        text.removeLast(terminator.count)
        _ = truncate(paths.bulkFile, 0)
        for old in (try? FileManager.default.contentsOfDirectory(atPath: paths.runFolder)) ?? []
        where old.hasPrefix("kallsyms-") {
            removeFile(paths.runFolder + "/" + old)
        }
        try Files.writeAtomically(cache, text)
        return Kallsyms(path: cache, bootID: bootID, text: text, cached: false)
    }

    private func fileEnds(_ path: String, with suffix: [UInt8]) -> Bool {
        guard let size = Files.size(path), size >= UInt64(suffix.count) else { return false }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var tail = [UInt8](repeating: 0, count: suffix.count)
        let n = tail.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(size) - off_t(suffix.count)) }
        return n == suffix.count && tail == suffix
    }

    // MARK: Run folder

    func readState() throws(LabError) -> LabState? {
        guard Files.exists(paths.stateFile) else { return nil }
        let bytes = try Files.read(paths.stateFile)
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(LabState.self, from: Data(bytes))
        } catch {
            throw .stateUnreadable(path: paths.stateFile, reason: "\(error)")
        }
    }

    func writeState(_ state: LabState) throws(LabError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        let data: Data
        do {
            data = try encoder.encode(state)
        } catch {
            throw .stateUnreadable(path: paths.stateFile, reason: "cannot encode: \(error)")
        }
        try Files.writeAtomically(paths.stateFile, Array(data) + [0x0A])
    }

    /// Removes one VM's sockets, state and transfers; the logs stay for post-mortems until the
    /// next boot.
    private func removeRunFiles() {
        for path in [paths.stateFile, paths.serialSocket, paths.qmpSocket, paths.bulkFile] { removeFile(path) }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: paths.runFolder)) ?? []
        where name.hasPrefix("kallsyms-") {
            removeFile(paths.runFolder + "/" + name)
        }
    }

    private func removeFile(_ path: String) {
        unlink(path)
    }

    /// The console's last lines from the serial log (everything the guest printed this boot).
    public func consoleTail(lines: Int = 30) -> String {
        guard let bytes = try? Files.read(paths.serialLog) else { return "" }
        let text = SerialConsole.text(bytes.suffix(16384))
        return SerialConsole.lastLines(text.trimmingCharacters(in: .whitespacesAndNewlines), count: lines)
    }
}

/// Held while a Suture session talks to the lab's gdbstub. QEMU's stub serves one client: a second
/// connection waits in its listen queue and is accepted only when the first closes, which leaves
/// the VM stopped for good. So sessions take turns through a lock file in the run folder.
public final class LabGDBLease {
    private let lock: FileLock

    /// Waits up to `timeout` seconds for the stub to be free.
    public init(paths: LabPaths = LabPaths(), timeout: Double = 30) throws(LabError) {
        lock = try FileLock(paths.runFolder + "/gdb.lock", timeout: timeout,
                            holder: "another Suture session to release the lab's gdbstub", throwing: LabError.self)
    }
}
