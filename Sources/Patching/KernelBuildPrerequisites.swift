import Foundation

/// The host programs and headers kbuild needs to prepare a tree and compile objects, each with the
/// Debian package that provides it, so a missing one is reported with the command that installs it.
public enum KernelBuildPrerequisites {
    public struct Requirement: Sendable, Hashable {
        public var what: String
        public var package: String
        /// A program looked up in PATH, or an absolute path that must exist (a header).
        public var probe: String
    }

    /// modules_prepare builds objtool (libelf), the kconfig parser (bison, flex), the timeconst
    /// header (bc), sign-file and extract-cert (libssl); pahole runs for BTF (CONFIG_DEBUG_INFO_BTF).
    public static let build: [Requirement] = [
        Requirement(what: "make", package: "make", probe: "make"),
        Requirement(what: "patch", package: "patch", probe: "patch"),
        Requirement(what: "bison", package: "bison", probe: "bison"),
        Requirement(what: "flex", package: "flex", probe: "flex"),
        Requirement(what: "bc", package: "bc", probe: "bc"),
        Requirement(what: "pahole", package: "dwarves", probe: "pahole"),
        Requirement(what: "perl", package: "perl", probe: "perl"),
        Requirement(what: "libelf headers (gelf.h)", package: "libelf-dev", probe: "/usr/include/gelf.h"),
        Requirement(what: "OpenSSL headers (openssl/ssl.h)", package: "libssl-dev", probe: "/usr/include/openssl/ssl.h"),
    ]

    /// What fetching a Debian kernel needs on top.
    public static let debian: [Requirement] = [
        Requirement(what: "apt-get", package: "apt", probe: "apt-get"),
        Requirement(what: "dpkg-deb", package: "dpkg", probe: "dpkg-deb"),
        Requirement(what: "tar", package: "tar", probe: "tar"),
        Requirement(what: "xz", package: "xz-utils", probe: "xz"),
    ]

    /// The requirements that are not met.
    public static func missing(_ requirements: [Requirement]) -> [Requirement] {
        requirements.filter { requirement in
            requirement.probe.hasPrefix("/")
                ? !FileManager.default.fileExists(atPath: requirement.probe)
                : HostTool.find(requirement.probe) == nil
        }
    }

    /// Throws `.prerequisitesMissing` naming what is missing and the apt command that installs it.
    public static func check(_ requirements: [Requirement]) throws(KernelBuildError) {
        let missing = missing(requirements)
        guard !missing.isEmpty else { return }
        var packages: [String] = []
        for requirement in missing where !packages.contains(requirement.package) { packages.append(requirement.package) }
        throw .prerequisitesMissing(missing: missing.map(\.what), packages: packages)
    }
}
