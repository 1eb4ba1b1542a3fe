/// One object a kernel build compiles from a C file, and where its code ends up.
public struct KernelObject: Sendable, Hashable, CustomStringConvertible {
    /// The C file, relative to the tree (`fs/nfs/file.c`).
    public var source: String
    /// The object kbuild writes (`fs/nfs/file.o`).
    public var object: String
    /// The module whose `.ko` links the object (`nfs`, with kbuild's `-` to `_`), nil when built in.
    public var module: String?
    /// The Makefile line that decided it (`fs/nfs/Makefile:9 nfs-y, fs/nfs/Makefile:6 obj-m`).
    public var reason: String

    public init(source: String, object: String, module: String?, reason: String) {
        self.source = source
        self.object = object
        self.module = module
        self.reason = reason
    }

    public var description: String {
        "\(object) (\(module.map { "module \($0)" } ?? "built in"); \(reason))"
    }

    /// kbuild's `name-fix`: module names use `_` where file names have `-`.
    static func moduleName(_ stem: String) -> String {
        stem.replacingOccurrences(of: "-", with: "_")
    }
}
