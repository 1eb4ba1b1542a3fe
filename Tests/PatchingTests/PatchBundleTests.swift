import Foundation
import Testing
import Targets
@testable import Patching

@Suite struct PatchBundleTests {
    let articleHunk = Hunk(symbol: "nfs_flock", module: "nfs", offset: 0x2f, expected: [0x74], replacement: [0x75])

    @Test func roundTripKeepsEveryField() throws {
        let bundle = PatchBundle(description: "the article's fix", target: TargetIdentity(kind: .kernel, release: "6.1.0-56-amd64", buildID: "abcd"),
                                 architecture: "x86_64",
                                 hunks: [articleHunk, Hunk(symbol: "f", ordinal: 2, offset: 4, expected: [1, 2], replacement: [3, 4], mask: [0xff, 0])],
                                 functions: [FunctionImage(symbol: "f", module: nil, bytes: [0x90, 0xc3], mask: [0xff, 0xff])])
        let decoded = try PatchBundle.decode(bundle.encoded(), path: "x.json")
        #expect(decoded == bundle)
        let text = String(decoding: bundle.encoded(), as: UTF8.self)
        #expect(text.contains("\"offset\" : \"0x2f\""))
        #expect(text.contains("\"expected\" : \"74\""))
    }

    @Test func idIsStableAndContentDerived() {
        let a = PatchBundle(target: nil, architecture: "x86_64", hunks: [articleHunk])
        let b = PatchBundle(target: nil, architecture: "x86_64", hunks: [articleHunk])
        var other = articleHunk
        other.replacement = [0x76]
        let c = PatchBundle(target: nil, architecture: "x86_64", hunks: [other])
        #expect(a.id == b.id)
        #expect(a.id != c.id)
        #expect(a.id.hasPrefix("nfs_flock-"))
        #expect(articleHunk.location == "nfs_flock [nfs]+0x2f")
    }

    @Test func handWrittenBundleWithPlainNumbers() throws {
        let json = """
        {"format":"suture-bundle","version":1,"id":"x","hunks":[{"symbol":"nfs_flock","module":"nfs","offset":47,"expected":"0x74","replacement":"75"}]}
        """
        let bundle = try PatchBundle.decode(Data(json.utf8), path: "hand.json")
        #expect(bundle.hunks[0].offset == 47)
        #expect(bundle.hunks[0].expected == [0x74])
    }

    @Test(arguments: [
        (#"{"format":"suture-bundle","version":1,"id":"x","hunks":[{"symbol":"f","offset":"0x2f","expected":"74 39","replacement":"75"}]}"#,
         "hunks[0].replacement: expected has 2 bytes and replacement 1"),
        (#"{"format":"suture-bundle","version":1,"id":"x","hunks":[{"symbol":"f","offset":"zz","expected":"74","replacement":"75"}]}"#,
         "hunks[0].offset: expected a number like 0x2f, found \"zz\""),
        (#"{"format":"suture-bundle","version":1,"id":"x","hunks":[{"symbol":"f","offset":"0x1","expected":"7g","replacement":"75"}]}"#,
         "hunks[0].expected: expected hex bytes"),
        (#"{"format":"other","version":1,"id":"x","hunks":[{"symbol":"f","offset":"0x1","expected":"74","replacement":"75"}]}"#,
         "format is \"other\""),
        (#"{"format":"suture-bundle","version":9,"id":"x","hunks":[{"symbol":"f","offset":"0x1","expected":"74","replacement":"75"}]}"#,
         "bundle version 9 is newer"),
        (#"{"format":"suture-bundle","version":1,"id":"x","hunks":[]}"#, "it has no hunks"),
        (#"{"format":"suture-bundle","version":1,"id":"x","hunks":[{"offset":"0x1","expected":"74","replacement":"75"}]}"#,
         "a hunk needs a symbol or an address"),
        ("not json", "not a valid Suture bundle"),
    ])
    func malformedBundlesNameThePathAndProblem(json: String, message: String) {
        #expect {
            _ = try PatchBundle.decode(Data(json.utf8), path: "/tmp/b.json")
        } throws: { error in
            let text = "\(error)"
            return text.hasPrefix("/tmp/b.json: ") && text.contains(message)
        }
    }

    @Test func maskedComparison() {
        #expect(Hunk.firstMismatch([0x74, 0x39], [0x74, 0x39], mask: nil) == nil)
        #expect(Hunk.firstMismatch([0x74, 0x38], [0x74, 0x39], mask: nil) == 1)
        #expect(Hunk.firstMismatch([0x74, 0x38], [0x74, 0x39], mask: [0xff, 0x00]) == nil)
        #expect(Hunk.firstMismatch([0x74], [0x74, 0x39], mask: nil) == 1)
    }
}

@Suite struct EffectiveReplacementTests {
    @Test func maskedPlaceholdersAreNeverWrittenBack() {
        // `call rel32` with a relocated field: the file has 00 00 00 00, the live kernel the real
        // displacement. A hunk changing only the byte after it must keep the live displacement.
        let hunk = Hunk(symbol: "f", offset: 0, expected: [0xe8, 0, 0, 0, 0, 0x74], replacement: [0xe8, 0, 0, 0, 0, 0x75],
                        mask: [0xff, 0, 0, 0, 0, 0xff])
        let live: [UInt8] = [0xe8, 0x12, 0x34, 0x56, 0x78, 0x74]
        #expect(PatchEngine.effectiveReplacement(hunk, live: live) == [0xe8, 0x12, 0x34, 0x56, 0x78, 0x75])
    }
}
