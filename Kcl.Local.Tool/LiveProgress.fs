/// The live progress display on a terminal (stderr), polling the shards' figures.
module Kcl.Local.Tool.LiveProgress

open System
open System.Threading
open System.Threading.Tasks
open Kcl.Local
open Spectre.Console

/// Shows one bar per shard on stderr until `finished` completes.
let show (meters: ShardProgress[]) (finished: Task) =
    let console =
        AnsiConsole.Create(AnsiConsoleSettings(Out = AnsiConsoleOutput(Console.Error)))

    console
        .Progress()
        .AutoClear(false)
        .Columns(
            [|
                TaskDescriptionColumn() :> ProgressColumn
                ProgressBarColumn()
                PercentageColumn()
                ElapsedTimeColumn()
            |]
        )
        .Start(fun context ->
            let bars =
                meters
                |> Array.map (fun m -> m, context.AddTask(m.ShardId, true, float (max 1 m.Total)))

            let refresh () =
                for meter, bar in bars do
                    bar.Description <- sprintf "%s %-13s %d" meter.ShardId meter.State meter.Delivered
                    bar.Value <- float (min meter.Delivered (max 1 meter.Total))

            while not finished.IsCompleted do
                refresh ()
                finished.Wait(TimeSpan.FromMilliseconds 150.0) |> ignore

            refresh ())
