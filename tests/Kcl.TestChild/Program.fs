/// A child process for the process-level tests: a processor that tries every way of writing to stdout that user
/// code has, and checkpoints at the end of each batch and at shard end,
/// exactly as TRANSCRIPTS.md T20 expects.
module Kcl.TestChild.Program

open System
open System.Diagnostics
open System.Runtime.InteropServices
open Kcl.Core
open Microsoft.Extensions.Logging

[<DllImport("libc", SetLastError = true)>]
extern nativeint write(int fd, byte[] buffer, nativeint count)

let private writeToFd1 (text: string) =
    let bytes = Text.Encoding.ASCII.GetBytes(text + "\n")
    write (1, bytes, nativeint bytes.Length) |> ignore

let private runToEnd (file: string) (arguments: string list) =
    let start = ProcessStartInfo(file, arguments, UseShellExecute = false)
    use child = Process.Start start
    child.WaitForExit()

[<EntryPoint>]
let main _ =
    // Built before the run, while stdout is still the real one: the classic way a protocol gets corrupted.
    use consoleLogging = LoggerFactory.Create(fun builder -> builder.AddConsole() |> ignore)
    let earlyLogger = consoleLogging.CreateLogger "early"
    let earlyOut = Console.Out

    let noisy () =
        Console.WriteLine "stray: Console.WriteLine"
        printfn "stray: printfn"
        earlyOut.WriteLine "stray: a Console.Out captured before the run"
        earlyOut.Flush()
        earlyLogger.LogWarning "stray: a console logger built before the run"
        writeToFd1 "stray: write(1) from native code"
        runToEnd "sh" [ "-c"; "echo stray: a child process" ]
        // A grandchild that outlives us must not hold the protocol's stdout open, or the daemon never sees EOF. Its
        // standard streams are pipes of its own, so only a leaked descriptor could keep the protocol's pipe open.
        ProcessStartInfo("sleep", [ "10" ], UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true)
        |> Process.Start
        |> ignore

    let processor =
        Processor.create 0 (fun batches event ->
            match event with
            | Event.Initialized _ -> noisy (); batches, []
            | Event.RecordsReceived(records, _) ->
                noisy ()
                // As in TRANSCRIPTS.md T20: an explicit checkpoint at the batch's last record, none for an empty batch.
                let checkpoint =
                    records
                    |> Array.tryLast
                    |> Option.map (fun last ->
                        Command.Checkpoint(CheckpointTarget.At(last.SequenceNumber, Some last.SubSequenceNumber)))

                batches + 1, Option.toList checkpoint
            | Event.ShardEnded -> batches, [ Command.Checkpoint CheckpointTarget.LastDelivered ]
            | _ -> batches, [])

    Processor.run processor
