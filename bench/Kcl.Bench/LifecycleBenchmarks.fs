/// The pure lifecycle: the transitions of one batch with one checkpoint.
module Kcl.Bench.LifecycleBenchmarks

open System
open BenchmarkDotNet.Attributes
open Kcl.Core

[<MemoryDiagnoser>]
type BatchCycle() =
    let options: Lifecycle.Options =
        {
            Retry = RetryPolicy.Default
            OnProcessorException = ExceptionPolicy.FailFast
        }

    let records =
        Array.init 500 (fun n ->
            {
                Data = ReadOnlyMemory [| byte n |]
                PartitionKey = "pk"
                SequenceNumber = SequenceNumber.parse (string (1000 + n))
                SubSequenceNumber = 0L
                ApproximateArrivalTimestamp = None
            })

    let batch = Lifecycle.Input.Received(DaemonMessage.ProcessRecords(records, Some 0L))
    let reply = Lifecycle.Input.Received(DaemonMessage.CheckpointReply(None, None, None))
    let mutable state = Lifecycle.initial options

    /// processRecords, a checkpoint request, its reply, the callback's return: four transitions.
    [<Benchmark>]
    member _.OneBatch() =
        let s, _ = Lifecycle.transition batch state
        let s, _ = Lifecycle.transition (Lifecycle.Input.CheckpointRequested(1, 1, CheckpointTarget.LastDelivered)) s
        let s, _ = Lifecycle.transition reply s
        let s, effects = Lifecycle.transition (Lifecycle.Input.CallbackReturned 1) s
        effects.Length
