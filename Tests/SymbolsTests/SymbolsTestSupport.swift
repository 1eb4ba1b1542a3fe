import Foundation
import Symbols
import TestSupport

/// Inputs shared by the Symbols tests, all made at test time from this machine.
enum SymbolsFixtures {
    /// A copy of this host's /proc/kallsyms: the tests and their oracles (wc, grep, awk) must read
    /// the same text, and kallsyms grows whenever a BPF program or a module is loaded.
    static func kallsymsSnapshot() throws -> URL {
        let folder = try Fixtures.temporaryFolder("suture-kallsyms")
        let copy = folder.appendingPathComponent("kallsyms")
        try Fixtures.check("cp", ["/proc/kallsyms", copy.path])
        let bytes = try read(copy)
        // A non-root reader sees zeros; the tests need real addresses.
        guard bytes.count > 1000, !bytes.starts(with: Array("0000000000000000".utf8)) else {
            throw Fixtures.Failure("/proc/kallsyms shows no addresses here: run the tests as root")
        }
        return copy
    }

    static func read(_ url: URL) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: url))
    }

    /// The lines of a tool's output, without the empty last one.
    static func lines(_ text: String) -> [Substring] {
        text.split(separator: "\n", omittingEmptySubsequences: true)
    }

    /// A C program with code, read-only data, data and bss, built with gcc into `folder`.
    static let programSource = """
        #include <stdio.h>
        #include <string.h>
        static int helper(int x) { return x * 3 + 1; }
        __attribute__((noinline)) int add(int a, int b) { return helper(a) + b; }
        __attribute__((noinline, cold)) void rarely(const char *why) { fprintf(stderr, "rare: %s\\n", why); }
        __attribute__((noinline)) int pick(int a) {
            if (__builtin_expect(a > 1000, 0)) { rarely("big"); return -1; }
            return a * 7;
        }
        int counter = 5;
        int zeroed[64];
        const char message[] = "hello";
        int main(int argc, char **argv) {
            printf("%d %d %s %d\\n", add(argc, counter), pick(argc), message, zeroed[argc]);
            return 0;
        }
        """

    /// A program linked from two objects that each define `static int scale(int)`: two functions
    /// of one name, as in a kernel with file-local helpers. Built with gcc into `folder`.
    static func twoScalesProgram(in folder: URL) throws -> URL {
        var objects: [String] = []
        for (name, factor) in [("first", 3), ("second", 5)] {
            objects.append(try Fixtures.compileC("""
                static __attribute__((noinline)) int scale(int x) { return x * \(factor) + 1; }
                int \(name)(int x) { return scale(x) + 2; }
                """, name: name, flags: ["-O1", "-c"], in: folder).path)
        }
        let main = try Fixtures.compileC("int first(int), second(int);\nint main(int c, char **v) { return first(c) + second(c); }",
                                         name: "main", flags: ["-O1", "-c"], in: folder)
        let program = folder.appendingPathComponent("program")
        try Fixtures.check("gcc", ["-o", program.path, main.path] + objects)
        return program
    }
}
