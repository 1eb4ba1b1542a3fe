import Foundation

/// The variables of one kbuild Makefile (`obj-y`, `obj-m`, `nfs-y`, ...) evaluated against a kernel
/// config, the way make would see them: line continuations, comments, `ifeq`/`ifneq`/`ifdef`/
/// `ifndef`/`else`/`endif`, `:=` `=` `+=` `?=`, `$(CONFIG_X)` in names and values, and the make
/// functions object lists use (`subst`, `patsubst`, `if`, `filter`, `filter-out`, `addprefix`,
/// `addsuffix`, `strip`, `sort`, `firstword`, `findstring`, `or`, `and`, `foreach`).
///
/// Enough to say which object lists a `.o` is in (kbuild's own answer, the compile command's
/// `-DMODULE` and `-DKBUILD_MODNAME`, is checked against it after the build); recipes, rules and
/// `include`d files are not evaluated.
struct KbuildMakefile {
    /// One assignment as written, for messages: `nfs-$(CONFIG_SYSCTL)` on line 14 became `nfs-y`.
    struct Assignment {
        /// The file it is in: the Makefile or one it includes.
        var file: String
        var rawName: String
        var name: String
        var words: [String]
        var line: Int
    }

    let path: String
    private(set) var variables: [String: [String]] = [:]
    private(set) var assignments: [Assignment] = []
    private let config: KernelConfig
    private let predefined: [String: String]
    /// The folder make runs in (the tree's top), against which `include` paths resolve.
    private let root: String?

    /// The Makefile kbuild reads for `directory` (relative to `tree`; "" for the top): `Kbuild` when
    /// present, else `Makefile`; nil when neither exists.
    static func file(for directory: String, in tree: String) -> String? {
        let folder = directory.isEmpty ? tree : tree + "/" + directory
        for name in ["Kbuild", "Makefile"] where FileManager.default.fileExists(atPath: folder + "/" + name) {
            return folder + "/" + name
        }
        return nil
    }

    /// `root` is the tree's top: make runs there, so relative `include` paths start from it
    /// (`include $(srctree)/virt/kvm/Makefile.kvm`); without it includes are not followed.
    init(path: String, config: KernelConfig, predefined: [String: String], root: String? = nil) throws(KernelBuildError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .io(path: path, operation: "read", errno: ENOENT)
        }
        self.path = path
        self.config = config
        self.predefined = predefined
        self.root = root
        evaluate(String(decoding: data, as: UTF8.self), file: path, depth: 0)
    }

    func words(_ name: String) -> [String] { variables[name] ?? [] }

    // MARK: Evaluation

    private struct Conditional {
        var parentActive: Bool
        var active: Bool
        var taken: Bool
    }

    private mutating func evaluate(_ text: String, file: String, depth: Int) {
        var conditionals: [Conditional] = []
        var inDefine = false
        // A tab-led line is a recipe only after a rule line; elsewhere (an indented assignment
        // inside `ifeq`, as arch/x86/kernel/Makefile has) make reads it as an ordinary line.
        var inRule = false
        for (number, logical) in Self.logicalLines(text) {
            let tabbed = logical.hasPrefix("\t")
            let line = Self.stripComment(logical).trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            let (keyword, rest) = Self.firstWord(line)
            if inDefine {
                if keyword == "endef" { inDefine = false }
                continue
            }
            let active = conditionals.last?.active ?? true
            switch keyword {
            case "ifeq", "ifneq", "ifdef", "ifndef":
                let value = active && condition(keyword, rest)
                conditionals.append(Conditional(parentActive: active, active: value, taken: value))
                continue
            case "else":
                guard var top = conditionals.popLast() else { continue }
                if top.taken || !top.parentActive {
                    top.active = false
                } else {
                    let (inner, innerRest) = Self.firstWord(rest)
                    top.active = inner.isEmpty ? true : condition(inner, innerRest)
                    top.taken = top.active
                }
                conditionals.append(top)
                continue
            case "endif":
                _ = conditionals.popLast()
                continue
            default:
                break
            }
            if tabbed && inRule { continue }
            inRule = false
            guard active else {
                // Rules in inactive branches do not open a recipe context either.
                continue
            }
            switch keyword {
            case "define": inDefine = true
            case "include", "-include", "sinclude":
                include(rest, depth: depth)
            case "undefine", "unexport", "vpath": break
            case "export", "override": inRule = !assign(rest, file: file, line: number)
            default: inRule = !assign(line, file: file, line: number)
            }
        }
    }

    /// `ifeq (a,b)`, `ifeq "a" "b"`, `ifdef NAME` and their negations.
    private func condition(_ keyword: String, _ rest: String) -> Bool {
        switch keyword {
        case "ifdef", "ifndef":
            let defined = !lookup(expand(Substring(rest)).trimmingCharacters(in: .whitespaces)).isEmpty
            return keyword == "ifdef" ? defined : !defined
        case "ifeq", "ifneq":
            guard let (a, b) = Self.comparands(rest) else { return false }
            let equal = expand(Substring(a)).trimmingCharacters(in: .whitespaces)
                == expand(Substring(b)).trimmingCharacters(in: .whitespaces)
            return keyword == "ifeq" ? equal : !equal
        default:
            return false
        }
    }

    /// Evaluates the files an `include` names, in place (missing ones are skipped, as `-include`
    /// does; kbuild's object lists never depend on a missing include).
    private mutating func include(_ names: String, depth: Int) {
        guard let root, depth < 8 else { return }
        for name in expand(Substring(names)).split(whereSeparator: \.isWhitespace) {
            let path = name.hasPrefix("/") ? String(name) : root + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            evaluate(String(decoding: data, as: UTF8.self), file: path, depth: depth + 1)
        }
    }

    /// Performs the assignment on `line`; false when the line is not one (a rule, or other text).
    private mutating func assign(_ line: String, file: String, line number: Int) -> Bool {
        guard let (left, op, right) = Self.splitAssignment(line) else { return false }
        let name = expand(Substring(left)).trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, !name.contains(where: \.isWhitespace) else { return true }
        let words = expand(Substring(right)).split(whereSeparator: \.isWhitespace).map(String.init)
        switch op {
        case "+=": variables[name, default: []] += words
        case "?=": if variables[name] == nil { variables[name] = words }
        case "!=": return true                             // shell assignment: not evaluated
        default: variables[name] = words
        }
        assignments.append(Assignment(file: file, rawName: left.trimmingCharacters(in: .whitespaces), name: name, words: words, line: number))
        return true
    }

    private func lookup(_ name: String) -> String {
        if let words = variables[name] { return words.joined(separator: " ") }
        if let value = predefined[name] { return value }
        return config[name] ?? ""
    }

    /// Expands `$(NAME)`, `${NAME}`, `$X`, `$$` and the supported functions.
    func expand(_ text: Substring) -> String {
        var result = ""
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            guard c == "$" else { result.append(c); i = text.index(after: i); continue }
            let next = text.index(after: i)
            guard next < text.endIndex else { result.append(c); break }
            let opener = text[next]
            if opener == "$" { result.append("$"); i = text.index(after: next); continue }
            guard opener == "(" || opener == "{" else {
                result += lookup(String(opener))
                i = text.index(after: next)
                continue
            }
            guard let close = Self.matchingClose(text, from: next) else {
                result += text[i...]
                break
            }
            let inner = text[text.index(after: next)..<close]
            result += reference(inner)
            i = text.index(after: close)
        }
        return result
    }

    /// The value of `$(inner)`: a function call when the first word is a known function, else a
    /// variable (whose name may itself contain references).
    private func reference(_ inner: Substring) -> String {
        let (name, rest) = Self.firstWord(String(inner))
        if Self.functions.contains(name), inner.contains(" ") || inner.contains("\t") {
            return call(name, Self.splitArguments(Substring(rest)))
        }
        // A substitution reference: $(NAME:a=b) is $(patsubst %a,%b,$(NAME)), $(NAME:x%y=u%v) as written.
        if let colon = Self.topLevelIndex(of: ":", in: inner) {
            let replacement = inner[inner.index(after: colon)...]
            if let equals = Self.topLevelIndex(of: "=", in: replacement) {
                var from = expand(replacement[..<equals]), to = expand(replacement[replacement.index(after: equals)...])
                if !from.contains("%") { from = "%" + from; to = "%" + to }
                let value = lookup(expand(inner[..<colon]))
                return value.split(whereSeparator: \.isWhitespace).map { Self.patsubst(String($0), from, to) }.joined(separator: " ")
            }
        }
        return lookup(expand(inner))
    }

    /// The first `character` outside nested references.
    static func topLevelIndex(of character: Character, in text: Substring) -> Substring.Index? {
        var depth = 0
        var i = text.startIndex
        while i < text.endIndex {
            switch text[i] {
            case "(", "{": depth += 1
            case ")", "}": depth -= 1
            case character where depth == 0: return i
            default: break
            }
            i = text.index(after: i)
        }
        return nil
    }

    private static let functions: Set<String> = [
        "subst", "patsubst", "if", "filter", "filter-out", "addprefix", "addsuffix", "strip", "sort",
        "firstword", "findstring", "or", "and", "foreach",
        // Recognised so that they expand to nothing instead of being read as variable names.
        "shell", "call", "wildcard", "notdir", "dir", "basename", "suffix", "word", "words",
        "lastword", "join", "realpath", "abspath", "error", "warning", "info", "eval", "origin",
        "value", "flavor", "file",
    ]

    private func call(_ function: String, _ arguments: [Substring]) -> String {
        func argument(_ k: Int) -> String { k < arguments.count ? expand(arguments[k]) : "" }
        func words(_ text: String) -> [String] { text.split(whereSeparator: \.isWhitespace).map(String.init) }
        switch function {
        case "subst":
            let from = argument(0)
            return from.isEmpty ? argument(2) : argument(2).replacingOccurrences(of: from, with: argument(1))
        case "patsubst":
            let pattern = argument(0).trimmingCharacters(in: .whitespaces)
            let replacement = argument(1).trimmingCharacters(in: .whitespaces)
            return words(argument(2)).map { Self.patsubst($0, pattern, replacement) }.joined(separator: " ")
        case "if":
            let test = argument(0).trimmingCharacters(in: .whitespaces)
            return test.isEmpty ? argument(2) : argument(1)
        case "filter", "filter-out":
            let patterns = words(argument(0))
            let keep = function == "filter"
            return words(argument(1)).filter { word in
                patterns.contains { Self.matches(word, $0) } == keep
            }.joined(separator: " ")
        case "addprefix":
            let prefix = argument(0).trimmingCharacters(in: .whitespaces)
            return words(argument(1)).map { prefix + $0 }.joined(separator: " ")
        case "addsuffix":
            let suffix = argument(0).trimmingCharacters(in: .whitespaces)
            return words(argument(1)).map { $0 + suffix }.joined(separator: " ")
        case "strip": return words(argument(0)).joined(separator: " ")
        case "sort": return Array(Set(words(argument(0)))).sorted().joined(separator: " ")
        case "firstword": return words(argument(0)).first ?? ""
        case "findstring": return argument(1).contains(argument(0)) ? argument(0) : ""
        case "or":
            for k in arguments.indices {
                let value = argument(k).trimmingCharacters(in: .whitespaces)
                if !value.isEmpty { return value }
            }
            return ""
        case "and":
            var last = ""
            for k in arguments.indices {
                last = argument(k).trimmingCharacters(in: .whitespaces)
                if last.isEmpty { return "" }
            }
            return last
        case "foreach":
            let variable = argument(0).trimmingCharacters(in: .whitespaces)
            guard arguments.count >= 3 else { return "" }
            var scoped = self
            return words(argument(1)).map { word in
                scoped.variables[variable] = [word]
                return scoped.expand(arguments[2])
            }.joined(separator: " ")
        default:
            return ""
        }
    }

    // MARK: Lexing

    /// Physical lines joined at trailing backslashes, each with the number of its first line.
    static func logicalLines(_ text: String) -> [(Int, String)] {
        var result: [(Int, String)] = []
        var pending: String?
        var start = 0
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = String(raw)
            if line.hasSuffix("\r") { line.removeLast() }
            let trailing = line.reversed().prefix { $0 == "\\" }.count
            let continues = trailing % 2 == 1
            if continues { line.removeLast() }
            if var joined = pending {
                joined += " " + line.drop { $0 == " " || $0 == "\t" }
                pending = joined
            } else {
                start = index + 1
                pending = line
            }
            if !continues, let done = pending {
                result.append((start, done))
                pending = nil
            }
        }
        if let done = pending { result.append((start, done)) }
        return result
    }

    /// The line up to an unescaped `#`.
    static func stripComment(_ line: String) -> String {
        var result = ""
        var escaped = false
        for c in line {
            if c == "#" && !escaped { break }
            escaped = c == "\\" && !escaped
            result.append(c)
        }
        return result
    }

    static func firstWord(_ line: String) -> (String, String) {
        guard let end = line.firstIndex(where: { $0 == " " || $0 == "\t" }) else { return (line, "") }
        return (String(line[..<end]), line[end...].trimmingCharacters(in: .whitespaces))
    }

    /// Splits `NAME op VALUE` at the first assignment operator outside references; nil for a rule
    /// (a `:` not starting `:=`/`::=`), which includes target-specific assignments.
    static func splitAssignment(_ line: String) -> (String, String, String)? {
        let chars = Array(line)
        var depth = 0
        var k = 0
        while k < chars.count {
            let c = chars[k]
            if c == "$", k + 1 < chars.count, chars[k + 1] == "(" || chars[k + 1] == "{" {
                depth += 1
                k += 2
                continue
            }
            if depth > 0 {
                if c == ")" || c == "}" { depth -= 1 }
                k += 1
                continue
            }
            let next = k + 1 < chars.count ? chars[k + 1] : nil
            var op: String?
            if c == ":" {
                if next == "=" { op = ":=" } else if next == ":", k + 2 < chars.count, chars[k + 2] == "=" { op = "::=" } else { return nil }
            } else if (c == "+" || c == "?" || c == "!"), next == "=" {
                op = String(c) + "="
            } else if c == "=" {
                op = "="
            }
            if let op {
                let left = String(chars[..<k])
                let right = String(chars[(k + op.count)...])
                return (left, op, right)
            }
            k += 1
        }
        return nil
    }

    /// The two sides of `(a,b)` or `"a" "b"` / `'a' 'b'`.
    static func comparands(_ text: String) -> (String, String)? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("("), trimmed.hasSuffix(")") {
            let inner = Substring(trimmed.dropFirst().dropLast())
            let parts = splitArguments(inner)
            guard parts.count == 2 else { return nil }
            return (String(parts[0]), String(parts[1]))
        }
        var parts: [String] = []
        var rest = Substring(trimmed)
        while let quote = rest.first, quote == "\"" || quote == "'" {
            let body = rest.dropFirst()
            guard let end = body.firstIndex(of: quote) else { return nil }
            parts.append(String(body[..<end]))
            rest = body[body.index(after: end)...].drop { $0 == " " || $0 == "\t" }
        }
        return parts.count == 2 ? (parts[0], parts[1]) : nil
    }

    /// Splits function arguments at commas outside nested references.
    static func splitArguments(_ text: Substring) -> [Substring] {
        var parts: [Substring] = []
        var depth = 0
        var start = text.startIndex
        var i = text.startIndex
        while i < text.endIndex {
            switch text[i] {
            case "(", "{": depth += 1
            case ")", "}": depth -= 1
            case "," where depth == 0:
                parts.append(text[start..<i])
                start = text.index(after: i)
            default: break
            }
            i = text.index(after: i)
        }
        parts.append(text[start...])
        return parts
    }

    /// The index of the `)` or `}` closing the opener at `open`, counting nesting.
    static func matchingClose(_ text: Substring, from open: Substring.Index) -> Substring.Index? {
        let opener = text[open]
        let closer: Character = opener == "(" ? ")" : "}"
        var depth = 0
        var i = open
        while i < text.endIndex {
            let c = text[i]
            if c == opener { depth += 1 } else if c == closer {
                depth -= 1
                if depth == 0 { return i }
            }
            i = text.index(after: i)
        }
        return nil
    }

    /// make's `%` patterns: one `%` matches any stem; without `%` the pattern must equal the word.
    static func matches(_ word: String, _ pattern: String) -> Bool {
        guard let percent = pattern.firstIndex(of: "%") else { return word == pattern }
        let prefix = pattern[..<percent], suffix = pattern[pattern.index(after: percent)...]
        return word.count >= prefix.count + suffix.count && word.hasPrefix(prefix) && word.hasSuffix(suffix)
    }

    static func patsubst(_ word: String, _ pattern: String, _ replacement: String) -> String {
        guard matches(word, pattern) else { return word }
        guard let percent = pattern.firstIndex(of: "%") else { return replacement }
        let prefix = pattern[..<percent], suffix = pattern[pattern.index(after: percent)...]
        let stem = word.dropFirst(prefix.count).dropLast(suffix.count)
        return replacement.replacingOccurrences(of: "%", with: stem)
    }
}
