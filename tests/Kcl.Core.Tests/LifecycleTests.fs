module Kcl.Core.Tests.LifecycleTests

open System
open FsCheck
open FsCheck.FSharp
open Kcl.Core
open Microsoft.Extensions.Logging
open Xunit

type private Input = Lifecycle.Input
type private Effect = Lifecycle.Effect
type private Callback = Lifecycle.Callback
let private initial = Lifecycle.initial
let private transition = Lifecycle.transition

let private seqA =
    SequenceNumber.parse "49590338271490256608559692538361571095921575989136588898"

let private seqB =
    SequenceNumber.parse "49590338271490256608559692538362780021741190618311294978"

let private record sequenceNumber sub =
    {
        Data = ReadOnlyMemory [| 1uy |]
        PartitionKey = "pk"
        SequenceNumber = sequenceNumber
        SubSequenceNumber = sub
        ApproximateArrivalTimestamp = None
    }

let private options: Lifecycle.Options =
    {
        Retry = { RetryPolicy.Default with FullJitter = false }
        OnProcessorException = ExceptionPolicy.FailFast
    }

let private skipping =
    { options with OnProcessorException = ExceptionPolicy.SkipFailedBatch }

let private withoutLogs effects =
    effects
    |> List.filter (function
        | Effect.Log _ -> false
        | _ -> true)

let private logsAt level effects =
    effects
    |> List.choose (function
        | Effect.Log(l, message) when l = level -> Some message
        | _ -> None)

/// Feeds the inputs in order and returns the final state and every effect, logs removed.
let private run options inputs =
    ((initial options, []), inputs)
    ||> List.fold (fun (state, effects) input ->
        let state, produced = transition input state
        state, effects @ produced)
    |> fun (state, effects) -> state, withoutLogs effects

let private status action = Effect.Send(ChildMessage.Status action)
let private checkpoint target = Effect.Send(ChildMessage.Checkpoint target)
let private reply error = Input.Received(DaemonMessage.CheckpointReply(None, None, error))
let private ok requests = Effect.CompleteCheckpoints(requests, Ok())

let private initialize =
    Input.Received(DaemonMessage.Initialize(ShardId "shardId-000000000000", Some(SequenceNumber.ofSentinel Sentinel.TrimHorizon), Some 0L))

let private batch = Input.Received(DaemonMessage.ProcessRecords([| record seqA 0L; record seqB 7L |], Some 0L))

let private lastDelivered = CheckpointTarget.LastDelivered

[<Fact>]
let ``initialize invokes the processor and answers once it returns`` () =
    let state, effects = run options [ initialize; Input.CallbackReturned 1 ]

    Assert.Equal<Effect list>(
        [
            Effect.Invoke(1, Callback.Initialize(ShardId "shardId-000000000000", Some(SequenceNumber.ofSentinel Sentinel.TrimHorizon), Some 0L))
            status "initialize"
        ],
        effects
    )

    Assert.Equal(Some(ShardId "shardId-000000000000"), state.ShardId)
    Assert.Equal(None, state.OpenAction)

[<Fact>]
let ``a checkpoint is sent while the action is open and the status follows its reply`` () =
    let _, effects =
        run options [ batch; Input.CheckpointRequested(1, 1, lastDelivered); reply None; Input.CallbackReturned 1 ]

    Assert.Equal<Effect list>(
        [
            Effect.Invoke(1, Callback.ProcessRecords([| record seqA 0L; record seqB 7L |], Some 0L))
            checkpoint lastDelivered
            ok [ 1 ]
            status "processRecords"
        ],
        effects
    )

[<Fact>]
let ``the status waits for a checkpoint still in flight when the callback returns`` () =
    let _, effects =
        run options [ batch; Input.CheckpointRequested(1, 1, lastDelivered); Input.CallbackReturned 1 ]

    Assert.DoesNotContain(status "processRecords", effects)
    let _, after = run options [ batch; Input.CheckpointRequested(1, 1, lastDelivered); Input.CallbackReturned 1; reply None ]
    Assert.Equal(status "processRecords", List.last after)

[<Fact>]
let ``checkpoints are sent one at a time, in order`` () =
    let explicitB = CheckpointTarget.At(seqB, Some 0L)

    let _, effects =
        run options [
            batch
            Input.CheckpointRequested(1, 1, CheckpointTarget.At(seqA, Some 0L))
            Input.CheckpointRequested(2, 1, explicitB)
            reply None
            reply None
            Input.CallbackReturned 1
        ]

    Assert.Equal<Effect list>(
        [
            Effect.Invoke(1, Callback.ProcessRecords([| record seqA 0L; record seqB 7L |], Some 0L))
            checkpoint (CheckpointTarget.At(seqA, Some 0L))
            ok [ 1 ]
            checkpoint explicitB
            ok [ 2 ]
            status "processRecords"
        ],
        effects
    )

[<Fact>]
let ``a checkpoint in initialize or leaseLost is refused locally and nothing is sent`` () =
    for opening in [ initialize; Input.Received DaemonMessage.LeaseLost ] do
        let _, effects = run options [ opening; Input.CheckpointRequested(1, 1, lastDelivered) ]

        match effects with
        | [ Effect.Invoke _; Effect.CompleteCheckpoints([ 1 ], Error failure) ] ->
            Assert.Equal(CheckpointError.InvalidState, failure.Error)
            Assert.Equal(0, failure.Attempts)
            Assert.Contains("not allowed", failure.Detail)
        | other -> failwithf "unexpected effects %A" other

[<Fact>]
let ``a retryable error is retried with doubling backoff until the policy's limit`` () =
    let inputs =
        [ batch; Input.CheckpointRequested(1, 1, lastDelivered) ]
        @ List.concat (List.replicate 5 [ reply (Some CheckpointError.Throttling); Input.RetryDue ])
        @ [ reply (Some CheckpointError.Throttling) ]

    let _, effects = run options inputs
    let sends = effects |> List.filter ((=) (checkpoint lastDelivered)) |> List.length
    Assert.Equal(6, sends)

    let waits =
        effects
        |> List.choose (function
            | Effect.WaitBeforeRetry(Backoff.Exactly delay) -> Some delay.TotalMilliseconds
            | _ -> None)

    Assert.Equal<float list>([ 200.0; 400.0; 800.0; 1600.0; 3200.0 ], waits)

    match List.last effects with
    | Effect.CompleteCheckpoints([ 1 ], Error failure) ->
        Assert.Equal(CheckpointError.Throttling, failure.Error)
        Assert.Equal(6, failure.Attempts)
        Assert.True failure.IsRetryable
    | other -> failwithf "unexpected %A" other

[<Fact>]
let ``the default policy waits at most 6.2 seconds in all, with full jitter`` () =
    Assert.Equal(TimeSpan.FromMilliseconds 6200.0, RetryPolicy.Default.MaxTotalWait)
    Assert.Equal(Backoff.UpTo(TimeSpan.FromMilliseconds 3200.0), RetryPolicy.Default.BackoffAfter 9)

[<Fact>]
let ``a non-retryable error is not retried`` () =
    let _, effects =
        run options [ batch; Input.CheckpointRequested(1, 1, CheckpointTarget.At(SequenceNumber.parse "12345", None)); reply (Some CheckpointError.IllegalArgument) ]

    Assert.DoesNotContain(effects, fun effect -> effect.IsWaitBeforeRetry)

    match List.last effects with
    | Effect.CompleteCheckpoints([ 1 ], Error failure) -> Assert.Equal(1, failure.Attempts)
    | other -> failwithf "unexpected %A" other

[<Fact>]
let ``shardEnded is answered after the processor's SHARD_END checkpoint`` () =
    let _, effects =
        run options [ Input.Received DaemonMessage.ShardEnded; Input.CheckpointRequested(1, 1, lastDelivered); reply None; Input.CallbackReturned 1 ]

    Assert.Equal<Effect list>([ Effect.Invoke(1, Callback.ShardEnded); checkpoint lastDelivered; ok [ 1 ]; status "shardEnded" ], effects)

[<Fact>]
let ``when the processor forgets SHARD_END the library checkpoints it and warns`` () =
    let state0 = initial options
    let state1, _ = transition (Input.Received DaemonMessage.ShardEnded) state0
    let state2, effects = transition (Input.CallbackReturned 1) state1
    Assert.Contains(checkpoint lastDelivered, effects)
    Assert.NotEmpty(logsAt LogLevel.Warning effects)
    let _, effects = transition (reply None) state2
    Assert.Equal<Effect list>([ status "shardEnded" ], effects)

[<Fact>]
let ``when SHARD_END cannot be checkpointed the run fails fast without a status`` () =
    let state, effects =
        run { options with Retry = RetryPolicy.NoRetries } [
            Input.Received DaemonMessage.ShardEnded
            Input.CallbackReturned 1
            reply (Some CheckpointError.Throttling)
        ]

    Assert.DoesNotContain(status "shardEnded", effects)
    Assert.Equal(Effect.Exit ExitCode.ShardEndNotCheckpointed, List.last effects)
    Assert.Equal(Some ExitCode.ShardEndNotCheckpointed, state.Finished)

[<Fact>]
let ``a lost lease during shardEnded is answered`` () =
    let _, effects =
        run options [ Input.Received DaemonMessage.ShardEnded; Input.CallbackReturned 1; reply (Some CheckpointError.Shutdown) ]

    Assert.Equal(status "shardEnded", List.last effects)

[<Fact>]
let ``a lease-lost checkpoint failure escaping processRecords is answered`` () =
    let lost: Lifecycle.ProcessorFailure =
        {
            Description = "CheckpointException"
            Checkpoint = Some { Error = CheckpointError.Shutdown; Attempts = 1; Detail = "gone" }
        }

    let _, effects = run options [ batch; Input.CallbackFailed(1, lost) ]
    Assert.Equal(status "processRecords", List.last effects)

[<Fact>]
let ``a checkpoint failure escaping shutdownRequested is answered`` () =
    let throttled: Lifecycle.ProcessorFailure =
        {
            Description = "CheckpointException"
            Checkpoint = Some { Error = CheckpointError.Throttling; Attempts = 6; Detail = "throttled" }
        }

    let _, effects = run options [ Input.Received DaemonMessage.ShutdownRequested; Input.CallbackFailed(1, throttled) ]
    Assert.Equal(status "shutdownRequested", List.last effects)

[<Fact>]
let ``a processor exception fails fast by default and is skipped under SkipFailedBatch`` () =
    let boom: Lifecycle.ProcessorFailure = { Description = "InvalidOperationException: boom"; Checkpoint = None }
    let state, effects = run options [ batch; Input.CallbackFailed(1, boom) ]
    Assert.Equal(Some ExitCode.ProcessorFailed, state.Finished)
    Assert.DoesNotContain(status "processRecords", effects)
    let state, effects = run skipping [ batch; Input.CallbackFailed(1, boom) ]
    Assert.Equal(None, state.Finished)
    Assert.Equal(status "processRecords", List.last effects)

[<Fact>]
let ``legacy shutdown reasons map to shard end and lease lost, answered as shutdown`` () =
    for reason in [ ShutdownReason.Terminate; ShutdownReason.ShardEnd ] do
        let _, effects = run options [ Input.Received(DaemonMessage.Shutdown reason); Input.CallbackReturned 1; reply None ]
        Assert.Equal<Effect list>([ Effect.Invoke(1, Callback.ShardEnded); checkpoint lastDelivered; status "shutdown" ], effects)

    for reason in [ ShutdownReason.Zombie; ShutdownReason.LeaseLost ] do
        let _, effects = run options [ Input.Received(DaemonMessage.Shutdown reason); Input.CallbackReturned 1 ]
        Assert.Equal<Effect list>([ Effect.Invoke(1, Callback.LeaseLost); status "shutdown" ], effects)

[<Fact>]
let ``end of input exits with 0 at once, even mid-batch, and abandons waiting checkpoints as lease lost`` () =
    let state, effects =
        run options [ batch; Input.CheckpointRequested(1, 1, lastDelivered); Input.EndOfInput ]

    Assert.Equal(Some ExitCode.EndOfInput, state.Finished)
    Assert.Equal(Effect.Exit ExitCode.EndOfInput, List.last effects)

    match effects |> List.filter _.IsCompleteCheckpoints with
    | [ Effect.CompleteCheckpoints([ 1 ], Error failure) ] -> Assert.True failure.IsLeaseLost
    | other -> failwithf "unexpected %A" other

[<Fact>]
let ``an unknown action is logged and answered; other undecodable lines fail fast`` () =
    let state, effects = transition (Input.Undecodable(ProtocolError.UnknownAction "rebalance", "{}")) (initial options)
    Assert.Equal<Effect list>([ status "rebalance" ], withoutLogs effects)
    Assert.NotEmpty(logsAt LogLevel.Warning effects)
    Assert.Equal(None, state.Finished)
    let state, effects = transition (Input.Undecodable(ProtocolError.MalformedJson "bad", "{")) (initial options)
    Assert.Equal(Some ExitCode.UndecodableInput, state.Finished)
    Assert.Contains("{", String.Join("", logsAt LogLevel.Error effects))

[<Fact>]
let ``a stray checkpoint reply is logged and ignored`` () =
    let state, effects = transition (reply None) (initial options)
    Assert.Equal<Effect list>([], withoutLogs effects)
    Assert.Equal(initial options, state)

[<Fact>]
let ``an out-of-band checkpoint is fixed to the last delivered record and sent with the next batch`` () =
    let _, effects =
        run options [
            batch
            Input.CallbackReturned 1
            Input.CheckpointRequested(1, 1, lastDelivered)
            Input.Received(DaemonMessage.ProcessRecords([||], None))
            reply None
        ]

    Assert.Equal<Effect list>(
        [
            Effect.Invoke(1, Callback.ProcessRecords([| record seqA 0L; record seqB 7L |], Some 0L))
            status "processRecords"
            checkpoint (CheckpointTarget.At(seqB, Some 7L))
            Effect.Invoke(2, Callback.ProcessRecords([||], None))
            ok [ 1 ]
        ],
        effects
    )

[<Fact>]
let ``a newer out-of-band request replaces an older one and both share its outcome`` () =
    let _, effects =
        run options [
            batch
            Input.CallbackReturned 1
            Input.CheckpointRequested(1, 1, CheckpointTarget.At(seqA, Some 0L))
            Input.CheckpointRequested(2, 1, lastDelivered)
            Input.Received DaemonMessage.ShutdownRequested
            reply None
        ]

    Assert.Equal<Effect list>(
        [
            Effect.Invoke(1, Callback.ProcessRecords([| record seqA 0L; record seqB 7L |], Some 0L))
            status "processRecords"
            checkpoint (CheckpointTarget.At(seqB, Some 7L))
            Effect.Invoke(2, Callback.ShutdownRequested)
            ok [ 1; 2 ]
        ],
        effects
    )

[<Fact>]
let ``an out-of-band request fails as lease lost when leaseLost comes next`` () =
    let _, effects =
        run options [ batch; Input.CallbackReturned 1; Input.CheckpointRequested(1, 1, lastDelivered); Input.Received DaemonMessage.LeaseLost ]

    match effects |> List.filter _.IsCompleteCheckpoints with
    | [ Effect.CompleteCheckpoints([ 1 ], Error failure) ] -> Assert.True failure.IsLeaseLost
    | other -> failwithf "unexpected %A" other

[<Fact>]
let ``an out-of-band request before any record is refused`` () =
    let _, effects = run options [ initialize; Input.CallbackReturned 1; Input.CheckpointRequested(1, 1, lastDelivered) ]

    match List.last effects with
    | Effect.CompleteCheckpoints([ 1 ], Error failure) -> Assert.Equal(CheckpointError.InvalidState, failure.Error)
    | other -> failwithf "unexpected %A" other

[<Fact>]
let ``an action arriving while another awaits its status fails fast`` () =
    let state, _ = run options [ batch; batch ]
    Assert.Equal(Some ExitCode.UndecodableInput, state.Finished)

(* The model-based property: drive the lifecycle with arbitrary moves of a daemon and a processor, and check the
   invariants of PROTOCOL.md §4 on everything it sends. *)

type private Move =
    | DaemonSends of DaemonMessage
    | DaemonReplies of CheckpointError option
    | DaemonSendsGarbage of ProtocolError
    | ProcessorReturns
    | ProcessorFails of CheckpointError option
    | ProcessorCheckpoints of CheckpointTarget
    | StaleCheckpointer of CheckpointTarget
    | TimerFires
    | StdinCloses

let private genMove =
    let target =
        Gen.elements [
            CheckpointTarget.LastDelivered
            CheckpointTarget.At(seqA, Some 0L)
            CheckpointTarget.At(SequenceNumber.shardEnd, None)
        ]

    let error =
        Gen.elements [
            None
            None
            Some CheckpointError.Throttling
            Some CheckpointError.Dependency
            Some CheckpointError.Shutdown
            Some CheckpointError.IllegalArgument
            Some(CheckpointError.Other "NullPointerException")
        ]

    let message =
        Gen.elements [
            DaemonMessage.Initialize(ShardId "s", None, None)
            DaemonMessage.ProcessRecords([| record seqA 0L |], Some 1L)
            DaemonMessage.ProcessRecords([||], None)
            DaemonMessage.LeaseLost
            DaemonMessage.ShardEnded
            DaemonMessage.ShutdownRequested
            DaemonMessage.Shutdown ShutdownReason.Terminate
            DaemonMessage.Shutdown ShutdownReason.Zombie
        ]

    Gen.frequency [
        4, Gen.map DaemonSends message
        5, Gen.map DaemonReplies error
        1, Gen.elements [ DaemonSendsGarbage(ProtocolError.UnknownAction "future"); DaemonSendsGarbage(ProtocolError.MalformedJson "x") ]
        4, Gen.constant ProcessorReturns
        2, Gen.map ProcessorFails error
        5, Gen.map ProcessorCheckpoints target
        1, Gen.map StaleCheckpointer target
        3, Gen.constant TimerFires
        1, Gen.constant StdinCloses
    ]

/// What the daemon sees on the wire, checked as the lifecycle speaks.
type private Wire =
    {
        Awaiting: string option
        Checkpointable: bool
        InFlight: CheckpointTarget option
        ShardEndCheckpointed: bool
        LeaseLost: bool
        Violations: string list
    }

let private checkWire (wire: Wire) (sent: ChildMessage) =
    let violation text =
        { wire with Violations = text :: wire.Violations }

    match sent with
    | ChildMessage.Status action ->
        let wire =
            match wire.Awaiting with
            | None -> violation (sprintf "a status for %s with no action awaiting one" action)
            | Some awaiting when awaiting <> action -> violation (sprintf "status %s answers %s" action awaiting)
            | Some _ when wire.InFlight.IsSome -> violation "a status while a checkpoint is in flight"
            | Some "shardEnded" when not (wire.ShardEndCheckpointed || wire.LeaseLost) ->
                violation "shardEnded answered without SHARD_END"
            | Some _ -> wire

        { wire with Awaiting = None }
    | ChildMessage.Checkpoint target ->
        let wire =
            if wire.Awaiting.IsNone || not wire.Checkpointable then
                violation "a checkpoint outside an open action with a checkpointer"
            elif wire.InFlight.IsSome then
                violation "two checkpoints in flight"
            else
                wire

        { wire with InFlight = Some target }

[<Fact>]
let ``over arbitrary moves the lifecycle keeps the protocol's invariants`` () =
    let property (moves: Move list) (skip: bool) =
        let options = if skip then skipping else options
        let mutable state = initial options
        let mutable currentAction = 0
        let mutable nextRequest = 0

        let mutable wire =
            {
                Awaiting = None
                Checkpointable = false
                InFlight = None
                ShardEndCheckpointed = false
                LeaseLost = false
                Violations = []
            }

        let daemonOpens (message: DaemonMessage) =
            if wire.Awaiting.IsNone then
                let owesShardEnd =
                    match message with
                    | DaemonMessage.ShardEnded -> true
                    | DaemonMessage.Shutdown reason -> reason.OwesShardEndCheckpoint
                    | _ -> false

                wire <-
                    { wire with
                        Awaiting = Some message.Action
                        Checkpointable =
                            match message with
                            | DaemonMessage.ProcessRecords _
                            | DaemonMessage.ShardEnded
                            | DaemonMessage.ShutdownRequested -> true
                            | DaemonMessage.Shutdown reason -> reason.OwesShardEndCheckpoint
                            | _ -> false
                        ShardEndCheckpointed = false
                        LeaseLost = false
                    }

                // The property reads "shardEnded" for both forms that owe SHARD_END.
                if owesShardEnd then
                    wire <- { wire with Awaiting = Some "shardEnded" }

        let inputOf move =
            match move with
            | DaemonSends message ->
                daemonOpens message
                Some(Input.Received message)
            | DaemonReplies error ->
                match wire.InFlight with
                | Some target ->
                    wire <-
                        { wire with
                            InFlight = None
                            ShardEndCheckpointed =
                                wire.ShardEndCheckpointed
                                || (error.IsNone
                                    && (target = CheckpointTarget.LastDelivered
                                        || target = CheckpointTarget.At(SequenceNumber.shardEnd, None)))
                            LeaseLost = wire.LeaseLost || error = Some CheckpointError.Shutdown
                        }

                    Some(reply error)
                | None -> Some(reply error)
            | DaemonSendsGarbage(ProtocolError.UnknownAction name as error) ->
                if wire.Awaiting.IsNone then
                    wire <- { wire with Awaiting = Some name; Checkpointable = false }

                Some(Input.Undecodable(error, "{}"))
            | DaemonSendsGarbage error -> Some(Input.Undecodable(error, "x"))
            | ProcessorReturns -> Some(Input.CallbackReturned currentAction)
            | ProcessorFails error ->
                let failure: Lifecycle.ProcessorFailure =
                    {
                        Description = "boom"
                        Checkpoint = error |> Option.map (fun e -> { Error = e; Attempts = 1; Detail = "d" })
                    }

                Some(Input.CallbackFailed(currentAction, failure))
            | ProcessorCheckpoints target ->
                nextRequest <- nextRequest + 1
                Some(Input.CheckpointRequested(nextRequest, currentAction, target))
            | StaleCheckpointer target ->
                nextRequest <- nextRequest + 1
                Some(Input.CheckpointRequested(nextRequest, max 0 (currentAction - 1), target))
            | TimerFires -> Some Input.RetryDue
            | StdinCloses -> Some Input.EndOfInput

        for move in moves do
            match inputOf move with
            | Some input ->
                // A status line for a shardEnded-type action uses its wire name; translate for the check.
                let next, effects = transition input state
                state <- next

                for effect in effects do
                    match effect with
                    | Effect.Invoke(action, _) -> currentAction <- action
                    | Effect.Send(ChildMessage.Status "shutdown" as sent) when wire.Awaiting = Some "shardEnded" ->
                        ignore sent
                        wire <- checkWire wire (ChildMessage.Status "shardEnded")
                    | Effect.Send(ChildMessage.Status "shutdown") when wire.Awaiting = Some "shutdown" ->
                        wire <- checkWire wire (ChildMessage.Status "shutdown")
                    | Effect.Send sent -> wire <- checkWire wire sent
                    | Effect.Exit _ ->
                        // The daemon stops listening: nothing after an exit may reach the wire.
                        wire <- { wire with Awaiting = None; Checkpointable = false }
                    | _ -> ()

                if state.Finished.IsSome then
                    wire <- { wire with Awaiting = None; Checkpointable = false }
            | None -> ()

        wire.Violations = []
        |> Prop.label (sprintf "%A" (List.rev wire.Violations))

    let moves = Gen.listOf genMove |> Gen.resize 60 |> Arb.fromGen
    Check.One(Config.QuickThrowOnFailure.WithMaxTest 3000, Prop.forAll moves (fun moves -> property moves false .&. property moves true))

[<Fact>]
let ``after the run ends nothing more is sent`` () =
    let property (moves: Input list) =
        let state, _ = transition Input.EndOfInput (initial options)

        moves
        |> List.forall (fun input ->
            let _, effects = transition input state
            effects |> List.forall (fun effect -> not effect.IsSend && not effect.IsInvoke))

    let inputs =
        Gen.elements [
            batch
            initialize
            reply None
            Input.CallbackReturned 1
            Input.CheckpointRequested(1, 1, lastDelivered)
            Input.RetryDue
        ]
        |> Gen.listOf
        |> Arb.fromGen

    Check.One(Config.QuickThrowOnFailure.WithMaxTest 200, Prop.forAll inputs property)
