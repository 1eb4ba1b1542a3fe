import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs the host programs a kernel build needs (make, patch, gcc, apt-get, dpkg-deb, tar) and
/// waits for them. stdin is /dev/null, so a tool that would prompt (kconfig asking about a new
/// option) reads end of file and goes on or fails instead of hanging.
struct HostTool {
    struct Result {
        var status: Int32
        /// stdout and stderr interleaved as the tool wrote them (one file for both).
        var output: String
        /// User plus system CPU time of the tool and its children: on a busy machine the wall
        /// time says more about the neighbours than about the build.
        var cpuSeconds: Double = 0

        /// The last `count` lines, for error messages about long logs.
        func tail(_ count: Int = 40) -> String {
            let lines = output.split(separator: "\n", omittingEmptySubsequences: false)
            let kept = lines.suffix(count + 1).joined(separator: "\n")
            return kept.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    /// Finds `program` in PATH, like the shell does.
    static func find(_ program: String) -> String? {
        if program.contains("/") { return FileManager.default.isExecutableFile(atPath: program) ? program : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        for folder in path.split(separator: ":") where !folder.isEmpty {
            let candidate = "\(folder)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Runs `program` with `arguments` in `folder`. Output (stdout and stderr together) goes to
    /// `log` when given (kept for the user: make's output is long), else to a temporary file that
    /// is read back and removed. A tool that cannot be found is `.toolMissing` naming `package`.
    /// With `interruption`, an interrupt stops the tool and the call throws `.interrupted`.
    static func run(_ program: String, _ arguments: [String], in folder: String? = nil,
                    environment: [String: String] = [:], log: String? = nil, package: String,
                    interruption: BuildInterruption? = nil) throws(KernelBuildError) -> Result {
        guard let executable = find(program) else { throw .toolMissing(tool: program, package: package) }
        if interruption?.isInterrupted == true { throw .interrupted(command: commandLine(program, arguments)) }
        let outputPath = log ?? NSTemporaryDirectory() + "suture-build-\(getpid())-\(UUID().uuidString.prefix(8)).out"
        guard FileManager.default.createFile(atPath: outputPath, contents: nil),
              let handle = FileHandle(forWritingAtPath: outputPath) else {
            throw .io(path: outputPath, operation: "create the output file of \(program)", errno: errno)
        }
        defer {
            try? handle.close()
            if log == nil { unlink(outputPath) }
        }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        if let folder { process.currentDirectoryURL = URL(fileURLWithPath: folder) }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = handle
        process.standardError = handle
        let cpuBefore = childrenCPUSeconds()
        do {
            try process.run()
        } catch {
            throw .commandFailed(command: commandLine(program, arguments), status: -1, log: nil,
                                 output: "cannot start: \(error)")
        }
        interruption?.started(process.processIdentifier)
        process.waitUntilExit()
        interruption?.finished()
        if interruption?.isInterrupted == true { throw .interrupted(command: commandLine(program, arguments)) }
        let data = FileManager.default.contents(atPath: outputPath) ?? Data()
        let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        return Result(status: status, output: String(decoding: data, as: UTF8.self),
                      cpuSeconds: childrenCPUSeconds() - cpuBefore)
    }

    /// CPU time of every child this process has waited for (Foundation reaps `Process` children).
    static func childrenCPUSeconds() -> Double {
        var usage = rusage()
        guard getrusage(RUSAGE_CHILDREN.rawValue, &usage) == 0 else { return 0 }
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// Like `run`, but a non-zero status is `.commandFailed` with the end of the output.
    @discardableResult
    static func check(_ program: String, _ arguments: [String], in folder: String? = nil,
                      environment: [String: String] = [:], log: String? = nil, package: String,
                      interruption: BuildInterruption? = nil) throws(KernelBuildError) -> Result {
        let result = try run(program, arguments, in: folder, environment: environment, log: log, package: package,
                             interruption: interruption)
        guard result.status == 0 else {
            throw .commandFailed(command: commandLine(program, arguments), status: result.status, log: log,
                                 output: result.tail())
        }
        return result
    }

    /// The command as a person would type it, for messages.
    static func commandLine(_ program: String, _ arguments: [String]) -> String {
        ([program] + arguments).map { word in
            word.isEmpty || word.contains(where: { " '\"$".contains($0) }) ? "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'" : word
        }.joined(separator: " ")
    }
}
