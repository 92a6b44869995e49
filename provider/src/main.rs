//! `terraform-provider-ferrymq`: started by Terraform, never by hand.

use terraform_provider_ferrymq::provider::FerryMq;
use terraform_provider_ferrymq::tfplugin;

#[tokio::main]
async fn main() {
    if let Err(e) = tfplugin::serve(FerryMq::default()).await {
        eprintln!("terraform-provider-ferrymq: {e:#}");
        std::process::exit(1);
    }
}
