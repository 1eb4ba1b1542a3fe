import Foundation

/// Runs the short-lived host tools the lab needs (apt-get, dpkg-deb, gcc, ldd, gzip) and waits.
///
/// QEMU is not started here: it must outlive the command that starts it, so `QEMUProcess` spawns it
/// in its own session.
struct HostCommand {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        /// stdout and stderr together, for error messages.
        var combined: String {
            [stdout, stderr].filter { !$0.isEmpty }.joined(separator: "\n")
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

    /// Runs `program` and returns its status and output. stdin comes from `inputFile` (else
    /// /dev/null); stdout goes to `outputFile` when given (for binary output), else it is captured.
    static func run(_ program: String, _ arguments: [String], in folder: String? = nil,
                    environment: [String: String] = [:], inputFile: String? = nil,
                    outputFile: String? = nil, package: String) throws(LabError) -> Result {
        guard let executable = find(program) else { throw .toolMissing(tool: program, package: package) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        if let folder { process.currentDirectoryURL = URL(fileURLWithPath: folder) }

        // stderr goes to a temporary file so one pipe can be drained on this thread without a
        // second reader thread; a full stderr pipe could otherwise block the tool.
        let errPath = NSTemporaryDirectory() + "suture-\(getpid())-\(UUID().uuidString.prefix(8)).err"
        guard FileManager.default.createFile(atPath: errPath, contents: nil),
              let errHandle = FileHandle(forWritingAtPath: errPath) else {
            throw .io(path: errPath, operation: "create", errno: errno)
        }
        defer {
            try? errHandle.close()
            unlink(errPath)
        }
        process.standardError = errHandle

        var inHandle: FileHandle?
        if let inputFile {
            guard let handle = FileHandle(forReadingAtPath: inputFile) else {
                throw .io(path: inputFile, operation: "open for reading", errno: errno)
            }
            inHandle = handle
            process.standardInput = handle
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        defer { try? inHandle?.close() }

        var outHandle: FileHandle?
        let pipe = Pipe()
        if let outputFile {
            guard FileManager.default.createFile(atPath: outputFile, contents: nil),
                  let handle = FileHandle(forWritingAtPath: outputFile) else {
                throw .io(path: outputFile, operation: "create", errno: errno)
            }
            outHandle = handle
            process.standardOutput = handle
        } else {
            process.standardOutput = pipe
        }
        defer { try? outHandle?.close() }

        do {
            try process.run()
        } catch {
            throw .commandFailed(command: ([program] + arguments).joined(separator: " "), status: -1,
                                 output: "cannot start: \(error)")
        }
        var stdoutData = Data()
        if outputFile == nil {
            stdoutData = pipe.fileHandleForReading.readDataToEndOfFile()
        }
        process.waitUntilExit()
        let errData = FileManager.default.contents(atPath: errPath) ?? Data()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: stdoutData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Like `run`, but a non-zero status is an error carrying the tool's output.
    @discardableResult
    static func check(_ program: String, _ arguments: [String], in folder: String? = nil,
                      environment: [String: String] = [:], inputFile: String? = nil,
                      outputFile: String? = nil, package: String) throws(LabError) -> Result {
        let result = try run(program, arguments, in: folder, environment: environment,
                             inputFile: inputFile, outputFile: outputFile, package: package)
        guard result.status == 0 else {
            throw .commandFailed(command: ([program] + arguments).joined(separator: " "),
                                 status: result.status, output: result.combined)
        }
        return result
    }
}
