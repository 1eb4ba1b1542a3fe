/// An error type that can say a file operation failed, naming the path, the operation and errno.
///
/// The modules keep their own error enums (each message reads in its module's voice), yet share the
/// code that opens files, takes locks and runs tools: that code throws whichever error type its
/// caller names. `LabError`, `KernelBuildError` and `JournalError` conform through their `.io` case.
package protocol IOFailure: Error {
    static func io(path: String, operation: String, errno: Int32) -> Self
}
