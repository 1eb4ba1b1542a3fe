import Foundation

/// The compiler that rebuilds a kernel's objects must be the one that built the kernel: another
/// version schedules and allocates registers differently, and the diff of its objects would describe
/// code the running kernel does not have.
///
/// kconfig records the first line of `$(CC) --version` as `CONFIG_CC_VERSION_TEXT`
/// (`gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0`); this check runs the compiler and compares that line.
public struct CompilerCheck: Sendable, Hashable {
    /// The program the build will use as `CC=`.
    public let compiler: String
    /// The first line of its `--version` output, equal to the config's text.
    public let versionText: String

    /// The compiler a config names. gcc prints the name it was invoked as (`gcc-12 (Debian ...)`),
    /// so the first word is the program; clang prints `[vendor] clang version ...`.
    public static func compilerName(configText: String) -> String {
        if configText.contains("clang version") { return "clang" }
        return String(configText.split(separator: " ").first ?? "gcc")
    }

    /// Runs `compiler --version` (default: the one the config names) and compares its first line
    /// with the config's `CONFIG_CC_VERSION_TEXT`.
    public static func verify(config: KernelConfig, compiler: String? = nil) throws(KernelBuildError) -> CompilerCheck {
        guard let expected = config.compilerVersionText, !expected.isEmpty else {
            throw .compilerUnknown(config: config.path)
        }
        let program = compiler ?? compilerName(configText: expected)
        guard HostTool.find(program) != nil else {
            throw .compilerMismatch(config: config.path, configText: expected, compiler: program,
                                    found: "\(program): command not found")
        }
        let result = try HostTool.run(program, ["--version"], package: program, throwing: KernelBuildError.self)
        let firstLine = result.output.split(separator: "\n", maxSplits: 1).first.map(String.init) ?? ""
        guard result.status == 0, firstLine == expected else {
            throw .compilerMismatch(config: config.path, configText: expected, compiler: program,
                                    found: result.status == 0 ? firstLine : "exit status \(result.status): \(firstLine)")
        }
        return CompilerCheck(compiler: program, versionText: firstLine)
    }
}
