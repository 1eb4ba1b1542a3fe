import Foundation
import ELF
import Symbols

/// The symbol files a command line can name (`--kallsyms`, `--system-map`, `--elf`), read the same way
/// by every command.
enum SymbolSources {
    /// Reads a whole file; /proc files report size 0, so read to the end rather than by size.
    static func read(_ path: String) throws -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw CommandFailure("\(path): cannot open (\(String(cString: strerror(errno))))")
        }
        defer { try? handle.close() }
        return [UInt8](try handle.readToEnd() ?? Data())
    }

    static func kallsyms(_ path: String) throws -> SymbolIndex {
        SymbolIndex(try KallsymsParser.parse(try read(path), file: path))
    }

    static func systemMap(_ path: String) throws -> SymbolIndex {
        SymbolIndex(try SystemMapParser.parse(try read(path), file: path))
    }

    /// An ELF file's symbol tables; a kernel module's symbols carry its module name.
    static func elf(_ path: String) throws -> SymbolIndex {
        try SymbolIndex(elf: ELFFile(path: path), module: moduleName(ofObject: path))
    }

    /// A kernel module's name from its file name, as the kernel forms it (`nfs_layout_nfsv41_files`
    /// from `nfs_layout_nfsv41_files.ko.xz`; dashes become underscores); nil for anything else.
    static func moduleName(ofObject path: String) -> String? {
        var name = (path as NSString).lastPathComponent
        for suffix in [".xz", ".zst", ".gz"] where name.hasSuffix(suffix) { name.removeLast(suffix.count) }
        guard name.hasSuffix(".ko") else { return nil }
        name.removeLast(3)
        return name.replacingOccurrences(of: "-", with: "_")
    }
}
