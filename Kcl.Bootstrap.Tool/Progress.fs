/// Fetch progress on stderr: a live display on a terminal, plain lines when stderr is redirected.
module Kcl.Bootstrap.Tool.Progress

open System
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Kcl.Bootstrap
open Spectre.Console

let private size (bytes: int64) =
    if bytes >= 1048576L then
        sprintf "%.1f MiB" (float bytes / 1048576.0)
    elif bytes >= 1024L then
        sprintf "%.1f KiB" (float bytes / 1024.0)
    else
        sprintf "%d B" bytes

// Console.Error.WriteLine is synchronized, so lines from parallel downloads never interleave (eprintfn may).
let private line (text: string) = Console.Error.WriteLine text

/// Plain lines: one per download and retry. Cache hits stay quiet.
let plain (event: FetchEvent) =
    match event with
    | FetchEvent.Started n -> line (sprintf "kcl-bootstrap: verifying %d jars" n)
    | FetchEvent.Verified(c, _, bytes, false) -> line (sprintf "kcl-bootstrap: downloaded %O (%s)" c (size bytes))
    | FetchEvent.Retrying(c, _, attempt, delay, reason) ->
        line (
            sprintf "kcl-bootstrap: %O: attempt %d failed (%s); retrying in %.1f s" c attempt reason delay.TotalSeconds
        )
    | FetchEvent.Verified _
    | FetchEvent.Received _ -> ()

/// Runs work with a live display (jar count, bytes, rate) on stderr when it is a terminal, plain lines otherwise.
let run (work: (FetchEvent -> unit) -> Task<'T>) : Task<'T> =
    if Console.IsErrorRedirected then
        work plain
    else
        let console =
            AnsiConsole.Create(AnsiConsoleSettings(Out = AnsiConsoleOutput(Console.Error)))

        let clock = Stopwatch.StartNew()
        let mutable bytes = 0L

        console
            .Progress()
            .AutoClear(false)
            .Columns(TaskDescriptionColumn(), ProgressBarColumn(), PercentageColumn(), ElapsedTimeColumn())
            .StartAsync(fun ctx ->
                let jars = ctx.AddTask("jars", maxValue = 1.0)
                let gate = obj ()

                let describe () =
                    let rate = float bytes / max 0.001 clock.Elapsed.TotalSeconds

                    jars.Description <-
                        sprintf
                            "%d/%d jars, %s, %s/s"
                            (int jars.Value)
                            (int jars.MaxValue)
                            (size bytes)
                            (size (int64 rate))

                work (fun event ->
                    lock gate (fun () ->
                        match event with
                        | FetchEvent.Started n -> jars.MaxValue <- float (max n 1)
                        | FetchEvent.Received(_, n) -> bytes <- bytes + n
                        | FetchEvent.Verified _ -> jars.Increment 1.0
                        | FetchEvent.Retrying _ ->
                            console.MarkupLineInterpolated($"[yellow]retrying[/] {string event}")

                        describe ())))
