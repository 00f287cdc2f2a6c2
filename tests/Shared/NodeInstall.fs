(*
    The official Node binding, aws-kcl 2.3.2, installed for tests: tests/node-kcl-processor is copied to a scratch
    folder and installed there with npm. Compiled into each test project that runs it (Kcl.Core.Tests drives it with
    the test kit, Kcl.Local.Tests under the local daemon), so both install it the same way.
*)
namespace Kcl.Tests.Shared

open System
open System.Diagnostics
open System.IO
open System.Text
open System.Threading
open System.Threading.Tasks
open Xunit

/// Starting `node` and `npm` as real child processes, with every wait bounded.
module internal NodeChild =
    /// npm is a batch file on Windows, which Process.Start only finds by its full name.
    let npm = if OperatingSystem.IsWindows() then "npm.cmd" else "npm"

    /// A pump from a reader to a writer that flushes each chunk: the peer waits for whole lines, not for a buffer.
    let pump (source: Stream) (target: Stream) (token: CancellationToken) =
        task {
            let buffer = Array.zeroCreate<byte> 65536
            let mutable reading = true

            while reading do
                let! count = source.ReadAsync(buffer.AsMemory(), token)

                if count = 0 then
                    reading <- false
                else
                    do! target.WriteAsync(ReadOnlyMemory(buffer, 0, count), token)
                    do! target.FlushAsync token
        }

    /// Runs a command to its end within `timeout`, and returns its exit code and everything it printed.
    let runToEnd (folder: string) (file: string) (arguments: string list) (timeout: TimeSpan) =
        task {
            let info =
                ProcessStartInfo(
                    file,
                    arguments,
                    WorkingDirectory = folder,
                    UseShellExecute = false,
                    RedirectStandardInput = true,
                    RedirectStandardOutput = true,
                    RedirectStandardError = true
                )

            use child = Process.Start info
            child.StandardInput.Close()
            let stdout = child.StandardOutput.ReadToEndAsync()
            let stderr = child.StandardError.ReadToEndAsync()

            try
                do! child.WaitForExitAsync().WaitAsync timeout
            with :? TimeoutException ->
                child.Kill true
                failwithf "%s %s did not finish within %O" file (String.Join(" ", arguments)) timeout

            let! stdout = stdout.WaitAsync timeout
            let! stderr = stderr.WaitAsync timeout
            return child.ExitCode, stdout + stderr
        }

    /// The test kit's child: `node processor.js` with the kit's streams pumped to and from its stdin and stdout, and
    /// its stderr collected into `stderr`. Cancelling `abandon` (or the kit's token) kills the process tree.
    let processor (folder: string) (stderr: StringBuilder) (abandon: CancellationToken) =
        Func<Stream, Stream, CancellationToken, Task<int>>(fun input output token ->
            task {
                use linked = CancellationTokenSource.CreateLinkedTokenSource(token, abandon)

                let info =
                    ProcessStartInfo(
                        "node",
                        [ "processor.js" ],
                        WorkingDirectory = folder,
                        UseShellExecute = false,
                        RedirectStandardInput = true,
                        RedirectStandardOutput = true,
                        RedirectStandardError = true,
                        StandardErrorEncoding = Encoding.UTF8
                    )

                use child = Process.Start info

                use _ =
                    linked.Token.Register(fun () ->
                        if not child.HasExited then
                            child.Kill true)
                // Stops the stdin pump once node has gone, since the kit's input may stay open a while longer.
                use exited = CancellationTokenSource.CreateLinkedTokenSource linked.Token

                let toNode =
                    task {
                        try
                            try
                                do! pump input child.StandardInput.BaseStream exited.Token
                            with
                            | :? OperationCanceledException
                            | :? IOException -> ()
                        finally
                            // The daemon closes the child's stdin after the last status; so does the kit's input.
                            try
                                child.StandardInput.Close()
                            with :? IOException ->
                                ()
                    }

                let fromNode = pump child.StandardOutput.BaseStream output CancellationToken.None

                let errors =
                    task {
                        let mutable line = ""

                        while not (isNull line) do
                            let! next = child.StandardError.ReadLineAsync()
                            line <- next

                            if not (isNull line) then
                                lock stderr (fun () -> stderr.AppendLine line |> ignore)
                    }

                let bound = TimeSpan.FromSeconds 10.0

                try
                    do! child.WaitForExitAsync linked.Token
                with :? OperationCanceledException ->
                    if not child.HasExited then
                        child.Kill true

                    do! child.WaitForExitAsync().WaitAsync bound

                exited.Cancel()
                do! Task.WhenAll(toNode :> Task, fromNode, errors).WaitAsync bound
                return child.ExitCode
            })

    /// A folder of the repository's tests/, found from the test binaries.
    let testsFolder (name: string) =
        let rec up (folder: DirectoryInfo) =
            if isNull folder then failwith "the repository root (with Kcl.slnx) was not found above the test binaries"
            elif File.Exists(Path.Combine(folder.FullName, "Kcl.slnx")) then folder.FullName
            else up folder.Parent

        Path.Combine(up (DirectoryInfo AppContext.BaseDirectory), "tests", name)

    /// Copies a committed npm folder's files into `folder` and installs them there (`npm ci` from the lock file, no
    /// install scripts) within 3 minutes; `context` is added to the failure message.
    let installCopy (source: string) (folder: string) (context: string) =
        task {
            Directory.CreateDirectory folder |> ignore

            // Files only: a node_modules left in the source folder by a developer's own install is not copied.
            for file in Directory.GetFiles source do
                File.Copy(file, Path.Combine(folder, Path.GetFileName file))

            let command =
                if File.Exists(Path.Combine(folder, "package-lock.json")) then "ci" else "install"

            let arguments =
                [ command; "--ignore-scripts"; "--no-audit"; "--no-fund"; "--loglevel=error" ]

            let! code, printed = runToEnd folder npm arguments (TimeSpan.FromMinutes 3.0)

            if code <> 0 then
                failwithf "npm %s in %s exited with %d%s:\n%s" command folder code context printed
        }

/// aws-kcl 2.3.2 with tests/node-kcl-processor, installed with `npm ci` into a scratch folder once for the class.
/// A machine without node or npm fails every test here: CI's machines have both, and a skip would hide a lost check.
type NodeInstall() =
    let folder =
        Path.Combine(Path.GetTempPath(), "kcl-node-processor-" + Guid.NewGuid().ToString "N")

    let source = NodeChild.testsFolder "node-kcl-processor"

    /// The scratch folder holding processor.js and its node_modules.
    member _.Folder = folder

    interface IAsyncLifetime with
        member _.InitializeAsync() =
            task {
                let! code, version =
                    NodeChild.runToEnd Environment.CurrentDirectory "node" [ "--version" ] (TimeSpan.FromSeconds 30.0)

                if code <> 0 then
                    failwithf "node --version exited with %d: %s" code version

                do! NodeChild.installCopy source folder $" (node {version.Trim()})"
            }
            |> ValueTask

    interface IAsyncDisposable with
        member _.DisposeAsync() =
            try
                Directory.Delete(folder, true)
            with :? IOException ->
                ()

            ValueTask.CompletedTask

