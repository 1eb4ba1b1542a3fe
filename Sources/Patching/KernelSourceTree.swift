import Foundation

/// A kernel source tree that `suture build` compiles objects in: its version, where Suture keeps
/// its state in it (`.suture/`: the prepare stamp, the patch journal, build logs, the lock), and
/// which object (and module) a C file is compiled into.
public struct KernelSourceTree: Sendable, Hashable {
    public let root: String
    /// `VERSION.PATCHLEVEL.SUBLEVEL[EXTRAVERSION]` from the top Makefile (`6.1.192`).
    public let version: String

    public init(root: String) throws(KernelBuildError) {
        let root = (root as NSString).standardizingPath
        let makefile = root + "/Makefile"
        guard let data = FileManager.default.contents(atPath: makefile) else {
            throw .notAKernelTree(path: root, expected: "a top-level Makefile", found: "none")
        }
        guard FileManager.default.fileExists(atPath: root + "/Kbuild"),
              FileManager.default.fileExists(atPath: root + "/scripts/config") else {
            throw .notAKernelTree(path: root, expected: "Kbuild and scripts/config next to the Makefile", found: "the Makefile alone")
        }
        var fields: [String: String] = [:]
        for line in String(decoding: data.prefix(4096), as: UTF8.self).split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2, ["VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION"].contains(parts[0]) {
                fields[parts[0]] = parts[1]
            }
        }
        guard let major = fields["VERSION"], let minor = fields["PATCHLEVEL"] else {
            throw .notAKernelTree(path: root, expected: "VERSION and PATCHLEVEL in the Makefile's first lines", found: "neither")
        }
        self.root = root
        version = "\(major).\(minor)" + (fields["SUBLEVEL"].map { ".\($0)" } ?? "") + (fields["EXTRAVERSION"] ?? "")
    }

    /// Suture's own folder inside the tree.
    public var stateFolder: String { root + "/.suture" }
    var lockFile: String { stateFolder + "/lock" }
    var prepareStamp: String { stateFolder + "/prepared" }
    var journal: String { stateFolder + "/pending-patch" }
    var logs: String { stateFolder + "/logs" }
    /// The config kbuild builds with, after `olddefconfig`.
    public var dotConfig: String { root + "/.config" }

    // MARK: Which object, which module

    /// Variables every kbuild Makefile sees from the top Makefile, for x86-64.
    private func predefined(directory: String, config: KernelConfig) -> [String: String] {
        ["ARCH": "x86", "SRCARCH": "x86", "SUBARCH": "x86", "BITS": config.tristate("CONFIG_64BIT") == "y" ? "64" : "32",
         "srctree": ".", "objtree": ".", "src": directory, "obj": directory]
    }

    private func makefile(_ directory: String, config: KernelConfig) throws(KernelBuildError) -> KbuildMakefile? {
        guard let path = KbuildMakefile.file(for: directory, in: root) else { return nil }
        return try KbuildMakefile(path: path, config: config, predefined: predefined(directory: directory, config: config), root: root)
    }

    private func relative(_ path: String) -> String {
        path.hasPrefix(root + "/") ? String(path.dropFirst(root.count + 1)) : path
    }

    /// The object `source` (a `.c` relative to the tree) is compiled into under `config`, and the
    /// module that links it, from the directory's Makefile the way kbuild reads it:
    /// `obj-y`/`obj-m` for single-file objects, `<name>-y`/`-m`/`-objs` for the parts of a composite
    /// `<name>.o` which is itself in `obj-y` or `obj-m`. Also checks that the parent directories
    /// descend into this one under the config.
    public func object(for source: String, config: KernelConfig) throws(KernelBuildError) -> KernelObject {
        let directory = (source as NSString).deletingLastPathComponent
        let base = ((source as NSString).lastPathComponent as NSString).deletingPathExtension + ".o"
        let object = directory.isEmpty ? base : directory + "/" + base
        guard let makefile = try makefile(directory, config: config) else {
            throw .objectNotBuilt(file: source, object: object, makefile: directory + "/Makefile",
                                  reason: "the directory has no Kbuild or Makefile")
        }
        let makefilePath = relative(makefile.path)
        try checkDescent(into: directory, config: config, source: source, object: object)

        func line(_ name: String, containing word: String) -> String {
            let found = makefile.assignments.first { $0.name == name && $0.words.contains(word) }
            return "\(found.map { relative($0.file) } ?? makefilePath):\(found?.line ?? 0) \(found?.rawName ?? name)"
        }

        // Composite objects: nfs-y += file.o makes file.o a part of nfs.o.
        var visited: Set<String> = []
        func composite(containing part: String) -> (module: String?, reason: String)? {
            guard visited.insert(part).inserted else { return nil }
            for (name, words) in makefile.variables.sorted(by: { $0.key < $1.key }) where words.contains(part) {
                guard let stem = Self.compositeStem(name) else { continue }
                let whole = stem + ".o"
                let how = line(name, containing: part)
                if makefile.words("obj-m").contains(whole) {
                    return (KernelObject.moduleName(stem), how + ", " + line("obj-m", containing: whole))
                }
                if makefile.words("obj-y").contains(whole) {
                    return (nil, how + ", " + line("obj-y", containing: whole))
                }
                if let outer = composite(containing: whole) { return (outer.module, how + ", " + outer.reason) }
            }
            return nil
        }

        if let found = composite(containing: base) {
            return KernelObject(source: source, object: object, module: found.module, reason: found.reason)
        }
        if makefile.words("obj-m").contains(base) {
            return KernelObject(source: source, object: object, module: KernelObject.moduleName(String(base.dropLast(2))),
                                reason: line("obj-m", containing: base))
        }
        for list in ["obj-y", "lib-y"] where makefile.words(list).contains(base) {
            return KernelObject(source: source, object: object, module: nil, reason: line(list, containing: base))
        }
        throw .objectNotBuilt(file: source, object: object, makefile: makefilePath,
                              reason: notBuiltReason(base, in: makefile, config: config))
    }

    /// `nfs` for `nfs-y`, `nfs-m`, `nfs-objs`; nil for kbuild's own lists and flag variables.
    static func compositeStem(_ variable: String) -> String? {
        for suffix in ["-y", "-m", "-objs"] where variable.hasSuffix(suffix) {
            let stem = String(variable.dropLast(suffix.count))
            let reserved: Set<String> = ["obj", "lib", "subdir", "ccflags", "asflags", "ldflags", "extra", "always",
                                         "hostprogs", "userprogs", "targets", "subdir-ccflags", "subdir-asflags",
                                         "head", "core", "libs", "drivers", "clean-files", "userccflags", "no-clean-files",
                                         "ccflags-remove", "asflags-remove"]
            guard !stem.isEmpty, !reserved.contains(stem), !stem.hasPrefix("CFLAGS"), !stem.hasPrefix("AFLAGS") else { return nil }
            return stem
        }
        return nil
    }

    /// Why `base` is not built: the list it is in and the option that is off, or that no list names it.
    private func notBuiltReason(_ base: String, in makefile: KbuildMakefile, config: KernelConfig) -> String {
        if let assignment = makefile.assignments.first(where: { $0.words.contains(base) }) {
            let options = Self.configOptions(in: assignment.rawName)
            let state = options.map { "\($0) is \(config[$0].map { "\"\($0)\"" } ?? "not set")" }.joined(separator: ", ")
            return "\(base) is in `\(assignment.rawName)` (\(relative(assignment.file)):\(assignment.line))"
                + (state.isEmpty ? ", a list kbuild does not build into the kernel or a module" : " and \(state)")
        }
        return "no object list names \(base): the file is probably #included by another .c file, or not a kernel object"
    }

    private static func configOptions(in text: String) -> [String] {
        var result: [String] = []
        var rest = Substring(text)
        while let range = rest.range(of: "CONFIG_") {
            let name = rest[range.lowerBound...].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            result.append(String(name))
            rest = rest[name.endIndex...]
        }
        return result
    }

    /// Each parent directory must list the child (`obj-$(CONFIG_NFS_FS) += nfs/`) in a list the
    /// config turns on. A parent that does not mention the child at all is accepted: the top
    /// Makefile and arch Makefile reach some directories (`lib/`, `arch/x86/lib/`) through
    /// `libs-y`/`core-y`, which are not evaluated here.
    private func checkDescent(into directory: String, config: KernelConfig, source: String, object: String) throws(KernelBuildError) {
        var child = directory
        while !child.isEmpty {
            let parent = (child as NSString).deletingLastPathComponent
            let token = (child as NSString).lastPathComponent + "/"
            if let makefile = try makefile(parent, config: config) {
                let lists = ["obj-y", "obj-m", "lib-y", "subdir-y", "subdir-m"]
                let built = lists.contains { makefile.words($0).contains(token) || makefile.words($0).contains(child + "/") }
                if !built, let assignment = makefile.assignments.first(where: { $0.words.contains(token) }) {
                    let options = Self.configOptions(in: assignment.rawName)
                    let state = options.map { "\($0) is \(config[$0].map { "\"\($0)\"" } ?? "not set")" }.joined(separator: ", ")
                    throw .objectNotBuilt(file: source, object: object, makefile: relative(makefile.path),
                                          reason: "the build does not descend into \(child)/: it is in `\(assignment.rawName)` (line \(assignment.line))"
                                            + (state.isEmpty ? "" : " and \(state)"))
                }
            }
            child = parent
        }
    }

    // MARK: kbuild's own answer

    /// What kbuild compiled `object` as, from the command line it saved in `.<name>.o.cmd`:
    /// `-DMODULE` marks a module's part, `-DKBUILD_MODNAME='"nfs"'` names the module.
    /// nil when there is no .cmd file (the object was not built by kbuild).
    func compiledAs(_ object: String) -> (isModule: Bool, moduleName: String?)? {
        let directory = (object as NSString).deletingLastPathComponent
        let name = (object as NSString).lastPathComponent
        let cmd = root + "/" + (directory.isEmpty ? "" : directory + "/") + "." + name + ".cmd"
        guard let data = FileManager.default.contents(atPath: cmd) else { return nil }
        let text = String(decoding: data.prefix(65536), as: UTF8.self)
        guard let first = text.split(separator: "\n").first(where: { $0.hasPrefix("cmd_") || $0.hasPrefix("savedcmd_") }) else {
            return nil
        }
        let words = first.split(separator: " ")
        let isModule = words.contains("-DMODULE")
        var moduleName: String?
        for word in words where word.hasPrefix("-DKBUILD_MODNAME=") {
            moduleName = String(word.dropFirst("-DKBUILD_MODNAME=".count).filter { $0 != "'" && $0 != "\"" && $0 != "\\" })
        }
        return (isModule, moduleName)
    }
}
