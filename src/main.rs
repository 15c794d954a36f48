fn main() {
    for crd in homelab_operator::api::all_crds() {
        print!("{}", homelab_operator::api::crd_yaml(&crd));
    }
}
