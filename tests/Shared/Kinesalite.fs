(*
    kinesalite 3.3.3, a Kinesis emulator, for tests: tests/kinesalite is copied to a scratch folder, installed there
    with `npm ci`, and started with its start.js on 127.0.0.1 at a free port; stopped by its PID.
*)
namespace Kcl.Tests.Shared

open System
open System.Diagnostics
open System.IO
open System.Net
open System.Net.Sockets
open System.Threading.Tasks
open Xunit

/// A running kinesalite. A machine without node or npm fails every test using it: a skip would hide a lost check.
type Kinesalite() =
    let folder =
        Path.Combine(Path.GetTempPath(), "kcl-kinesalite-" + Guid.NewGuid().ToString "N")

    let source = NodeChild.testsFolder "kinesalite"

    let mutable server: Process = null
    let mutable port = 0

    /// A free loopback port, as the OS hands one out.
    static member FreePort() =
        let listener = new TcpListener(IPAddress.Loopback, 0)
        listener.Start()
        let port = (listener.LocalEndpoint :?> IPEndPoint).Port
        listener.Stop()
        port

    /// The emulator's endpoint, http://127.0.0.1:PORT/.
    member _.Endpoint = Uri(sprintf "http://127.0.0.1:%d/" port)

    /// The emulator's process id.
    member _.ProcessId = server.Id

    interface IAsyncLifetime with
        member _.InitializeAsync() =
            task {
                do! NodeChild.installCopy source folder ""

                port <- Kinesalite.FreePort()

                let info =
                    ProcessStartInfo(
                        "node",
                        [ "start.js"; string port ],
                        WorkingDirectory = folder,
                        UseShellExecute = false,
                        RedirectStandardOutput = true,
                        RedirectStandardError = true
                    )

                server <- Process.Start info
                let! line = server.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds 30.0)

                if isNull line || not (line.StartsWith "listening") then
                    let! err = server.StandardError.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds 5.0)
                    failwithf "kinesalite did not start: %s %s" line err
            }
            |> ValueTask

    interface IAsyncDisposable with
        member _.DisposeAsync() =
            if not (isNull server) then
                try
                    if not server.HasExited then
                        server.Kill true
                        server.WaitForExit 5000 |> ignore
                with :? InvalidOperationException ->
                    ()

                server.Dispose()

            try
                Directory.Delete(folder, true)
            with :? IOException ->
                ()

            ValueTask.CompletedTask
