/// The pure parts: shared files, the wire format, error messages.
module Kcl.Kinesis.Tests.PureTests

open System
open Xunit
open FsCheck
open FsCheck.FSharp
open Kcl.Kinesis

[<Fact>]
let ``a profile's keys come from the credentials file before the config file`` () =
    let credentials = "[default]\naws_access_key_id = AKID1\naws_secret_access_key = s1\n\n[dev]\naws_access_key_id=AKID2\naws_secret_access_key=s2\naws_session_token=t2\n"
    let config = "[profile dev]\naws_access_key_id=AKID3\naws_secret_access_key=s3\n[profile ops]\naws_access_key_id=AKID4\naws_secret_access_key=s4\n"
    Assert.Equal(Some("AKID1", "s1", None), SharedFiles.credentials "default" credentials config)
    Assert.Equal(Some("AKID2", "s2", Some "t2"), SharedFiles.credentials "dev" credentials config)
    Assert.Equal(Some("AKID4", "s4", None), SharedFiles.credentials "ops" credentials config)
    Assert.Equal(None, SharedFiles.credentials "none" credentials config)

[<Fact>]
let ``an error type is read after the last hash of __type`` () =
    Assert.Equal(
        Some("ResourceNotFoundException", "Stream x not found"),
        Wire.errorOf """{"__type":"com.amazonaws.kinesis#ResourceNotFoundException","message":"Stream x not found"}"""
    )

    Assert.Equal(None, Wire.errorOf "<html>not found</html>")

[<Fact>]
let ``throttling and 5xx are retried but a missing stream is not`` () =
    Assert.True(Wire.isRetryable 400 "ProvisionedThroughputExceededException")
    Assert.True(Wire.isRetryable 503 "Whatever")
    Assert.False(Wire.isRetryable 400 "ResourceNotFoundException")
    Assert.False(Wire.isRetryable 400 "ExpiredIteratorException")

[<Fact>]
let ``the error message names a missing stream, rejected credentials and an expired iterator`` () =
    let explain = Wire.explain "GetRecords" "orders" (Uri "http://127.0.0.1:1/") "eu-west-1" "environment variables"
    Assert.Contains("stream 'orders' does not exist", explain "ResourceNotFoundException" "x")
    Assert.Contains("credentials (from environment variables) were rejected", explain "UnrecognizedClientException" "x")
    Assert.Contains("iterator has expired", explain "ExpiredIteratorException" "x")

[<Fact>]
let ``uri encoding leaves unreserved characters and encodes every other byte`` () =
    Prop.forAll (Arb.fromGen (Gen.elements [ "a"; "~"; " "; "/"; "ሴ"; "%"; "+"; "=" ] |> Gen.listOf |> Gen.map (String.concat ""))) (fun (s: string) ->
        let encoded = SigV4.uriEncode false s
        Uri.UnescapeDataString encoded = s && encoded |> Seq.forall (fun c -> Char.IsAsciiLetterOrDigit c || "-._~%".Contains c))
    |> Check.QuickThrowOnFailure

[<Fact>]
let ``an aggregated record decodes to the sub-records it was encoded from`` () =
    let gen =
        Gen.zip (Gen.elements [ "a"; "b"; "pk-ሴ"; "" ]) (Gen.arrayOf (Gen.choose (0, 255) |> Gen.map byte))
        |> Gen.nonEmptyListOf

    Prop.forAll (Arb.fromGen gen) (fun records ->
        let decoded = Aggregation.tryDecode (Aggregation.encode records)
        decoded = Some records)
    |> Check.QuickThrowOnFailure

[<Fact>]
let ``a plain record or a damaged aggregate is not de-aggregated`` () =
    Assert.Equal(None, Aggregation.tryDecode "hello"B)
    let aggregate = Aggregation.encode [ "k", "v"B ]
    aggregate[aggregate.Length - 1] <- aggregate[aggregate.Length - 1] ^^^ 1uy
    Assert.Equal(None, Aggregation.tryDecode aggregate)
