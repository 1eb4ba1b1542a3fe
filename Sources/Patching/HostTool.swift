import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs the short-lived host programs Suture needs (make, patch, gcc, apt-get, dpkg-deb, tar for
/// kernel builds; gzip, ldd, insmod for the lab) and waits for them. stdin is /dev/null unless a
/// file is given, so a tool that would prompt (kconfig asking about a new option) reads end of file
/// and goes on or fails instead of hanging.
///
/// QEMU is not started here: it must outlive the command that starts it, so the lab spawns it in
/// its own session.
///
/// Errors are the caller's (`throwing: LabError.self`, `KernelBuildError.self`), so that a missing
/// tool or a failed one reads as part of what the user asked for.
package enum HostTool {
    package struct Result: Sendable {
        package var status: Int32
        /// What the tool wrote to stdout; with `Output.log`, stdout and stderr interleaved as the
        /// tool wrote them (one file for both).
        package var stdout: String
        /// What the tool wrote to stderr; empty with `Output.log` (it is in `stdout`).
        package var stderr: String
        /// User plus system CPU time of the tool and its children: on a busy machine the wall
        /// time says more about the neighbours than about the build.
        package var cpuSeconds: Double = 0

        /// stdout and stderr together, for parsing loose text and for error messages.
        package var output: String {
            [stdout, stderr].filter { !$0.isEmpty }.joined(separator: "\n")
        }

        /// The last `count` lines of `output`, for error messages about long logs.
        package func tail(_ count: Int = 40) -> String {
            let lines = output.split(separator: "\n", omittingEmptySubsequences: false)
            let kept = lines.suffix(count + 1).joined(separator: "\n")
            return kept.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    /// Where the tool's stdout and stderr go.
    package enum Output: Sendable {
        /// Both read back, apart (a caller may parse stdout alone, as with ldd).
        case captured
        /// stdout into this file (binary output, `gzip -c`); stderr read back.
        case stdoutFile(String)
        /// Both into this file, interleaved, kept for the user (make's output is long) and read
        /// back into `Result.stdout`.
        case log(String)

        var logFile: String? {
            if case let .log(path) = self { path } else { nil }
        }
    }

    /// Finds `program` in PATH, like the shell does.
    package static func find(_ program: String) -> String? {
        if program.contains("/") { return FileManager.default.isExecutableFile(atPath: program) ? program : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        for folder in path.split(separator: ":") where !folder.isEmpty {
            let candidate = "\(folder)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Runs `program` with `arguments` in `folder` and returns its status and output. stdin comes
    /// from `input` when given. A tool that cannot be found is `toolMissing` naming `package`. With
    /// `interruption`, an interrupt stops the tool and the call throws `toolInterrupted`.
    package static func run<Failure: HostToolFailure>(
        _ program: String, _ arguments: [String], in folder: String? = nil, environment: [String: String] = [:],
        input: String? = nil, output: Output = .captured, package: String,
        interruption: BuildInterruption? = nil, throwing _: Failure.Type
    ) throws(Failure) -> Result {
        guard let executable = find(program) else { throw .toolMissing(tool: program, package: package) }
        let command = commandLine(program, arguments)
        if interruption?.isInterrupted == true { throw .toolInterrupted(command: command) }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        if let folder { process.currentDirectoryURL = URL(fileURLWithPath: folder) }

        var inputHandle: FileHandle?
        if let input {
            guard let handle = FileHandle(forReadingAtPath: input) else {
                throw .io(path: input, operation: "open for reading", errno: errno)
            }
            inputHandle = handle
            process.standardInput = handle
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        defer { try? inputHandle?.close() }

        // stderr always goes to a file (the log, else a temporary one), so that at most one pipe
        // is drained on this thread without a second reader thread; a full stderr pipe could
        // otherwise block the tool.
        let log = output.logFile
        let errorPath = log ?? NSTemporaryDirectory() + "suture-\(getpid())-\(UUID().uuidString.prefix(8)).err"
        let errorHandle: FileHandle = try create(errorPath, for: program, throwing: Failure.self)
        defer {
            try? errorHandle.close()
            if log == nil { unlink(errorPath) }
        }
        process.standardError = errorHandle

        var pipe: Pipe?
        var outputHandle: FileHandle?
        switch output {
        case .captured:
            pipe = Pipe()
            process.standardOutput = pipe
        case let .stdoutFile(path):
            outputHandle = try create(path, for: program, throwing: Failure.self)
            process.standardOutput = outputHandle
        case .log:
            process.standardOutput = errorHandle
        }
        defer { try? outputHandle?.close() }

        let cpuBefore = childrenCPUSeconds()
        do {
            try process.run()
        } catch {
            throw .toolFailed(command: command, log: nil,
                              result: Result(status: -1, stdout: "", stderr: "cannot start: \(error)"))
        }
        interruption?.started(process.processIdentifier)
        let stdoutData = pipe?.fileHandleForReading.readDataToEndOfFile() ?? Data()
        process.waitUntilExit()
        interruption?.finished()
        if interruption?.isInterrupted == true { throw .toolInterrupted(command: command) }

        let written = String(decoding: FileManager.default.contents(atPath: errorPath) ?? Data(), as: UTF8.self)
        // A tool killed by a signal reports the signal number; the shell's 128 + N keeps it apart
        // from an exit status.
        let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        let cpuSeconds = childrenCPUSeconds() - cpuBefore
        if log != nil { return Result(status: status, stdout: written, stderr: "", cpuSeconds: cpuSeconds) }
        return Result(status: status, stdout: String(decoding: stdoutData, as: UTF8.self), stderr: written,
                      cpuSeconds: cpuSeconds)
    }

    /// Like `run`, but a non-zero status is `toolFailed` with the tool's output.
    @discardableResult
    package static func check<Failure: HostToolFailure>(
        _ program: String, _ arguments: [String], in folder: String? = nil, environment: [String: String] = [:],
        input: String? = nil, output: Output = .captured, package: String,
        interruption: BuildInterruption? = nil, throwing failure: Failure.Type
    ) throws(Failure) -> Result {
        let result = try run(program, arguments, in: folder, environment: environment, input: input, output: output,
                             package: package, interruption: interruption, throwing: failure)
        guard result.status == 0 else {
            throw .toolFailed(command: commandLine(program, arguments), log: output.logFile, result: result)
        }
        return result
    }

    /// The command as a person would type it, for messages.
    package static func commandLine(_ program: String, _ arguments: [String]) -> String {
        ([program] + arguments).map { word in
            word.isEmpty || word.contains(where: { " '\"$".contains($0) }) ? "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'" : word
        }.joined(separator: " ")
    }

    /// CPU time of every child this process has waited for (Foundation reaps `Process` children).
    static func childrenCPUSeconds() -> Double {
        var usage = rusage()
        guard getrusage(RUSAGE_CHILDREN.rawValue, &usage) == 0 else { return 0 }
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// Creates (or truncates) one of the files a tool writes to.
    private static func create<Failure: HostToolFailure>(_ path: String, for program: String,
                                                         throwing _: Failure.Type) throws(Failure) -> FileHandle {
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw .io(path: path, operation: "create the output file of \(program)", errno: errno)
        }
        return handle
    }
}
